"""Engine tuning, by timing on this machine: which of ONNX Runtime's own graph fusions to switch off for a variant,
and for an OpenVINO variant the length step its calls are padded to (`tune_openvino`).

ORT fuses Add + LayerNormalization into SkipLayerNormalization when it loads a graph. Next to int8 MatMuls its
kernel measured ~3 ms per call on a 32 × 128 × 384 tensor against ~0.3 ms for the unfused pair (AMD EPYC Zen 5,
onnxruntime 1.32), a fifth of the static int8 variant's time. Whether that holds depends on the CPU and the ORT
build, so export times each setting on the variant it just built and keeps the fastest; the choice goes into the
variant's textclf.json, which the runtime applies, and the gates judge the variant with it.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from textclf.inference.engines import MODEL_FILES, OpenVinoEngine, create_session
from textclf.inference.folders import MODEL_FILE, OPENVINO_PRECISION_KEY, OPENVINO_STEP_KEY
from textclf.inference.runtime import Classifier

logger = logging.getLogger(__name__)

# Each candidate is a list of ORT optimizer names to switch off; the first (none off) is ORT's default.
SESSION_CANDIDATES: tuple[tuple[str, ...], ...] = ((), ("SkipLayerNormFusion",))
MIN_GAIN = 0.03  # a setting must beat the default by 3 % to be kept: smaller differences are timing noise
ROUNDS = 7


def _timed_ms(session: Any, inputs: dict[str, np.ndarray], repeats: int = 3) -> float:
    """Median of a few back-to-back runs: one run alone jumps with the host's noise (seen: 4.6 vs 7.3 ms)."""
    session.run(None, inputs)  # the other settings' sessions ran in between: warm this one's caches again
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, inputs)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def tune_session(folder: Path, texts: list[str], threads: int) -> tuple[list[str], dict[str, Any]]:
    """The optimizers to switch off for `folder`'s model, and the timings that chose them.

    Each setting runs one text alone and a batch of 32 texts (padded to the longest), interleaved over several
    rounds of a few runs each; the cost is the geometric mean of the two medians, as in the serving-variant choice.
    """
    # The folder has no textclf.json yet, so the probe's own session runs ORT's defaults: the first candidate.
    probe = Classifier(folder, intra_op_threads=threads)
    batch = probe.pad(probe.encode(texts[:32])).inputs
    single = probe.pad(probe.encode(texts[:1])).inputs
    sessions = [probe.session] + [
        create_session(folder / MODEL_FILE, intra_op_threads=threads, disabled_optimizers=list(off))
        for off in SESSION_CANDIDATES[1:]
    ]
    samples: list[tuple[list[float], list[float]]] = [([], []) for _ in sessions]
    for _ in range(ROUNDS):
        for session, (b1, b32) in zip(sessions, samples, strict=True):
            b1.append(_timed_ms(session, single))
            b32.append(_timed_ms(session, batch))
    costs = [float(np.sqrt(statistics.median(b1) * statistics.median(b32))) for b1, b32 in samples]
    best = min(range(len(costs)), key=costs.__getitem__)
    if costs[best] > costs[0] * (1 - MIN_GAIN):
        best = 0
    timings = {
        ("default" if not off else "off: " + ", ".join(off)): {
            "b1_ms": round(statistics.median(b1), 3),
            "b32_ms": round(statistics.median(b32), 3),
        }
        for off, (b1, b32) in zip(SESSION_CANDIDATES, samples, strict=True)
    }
    chosen = list(SESSION_CANDIDATES[best])
    logger.info("%s: session tuning %s -> %s", folder.name, timings, chosen or "ORT defaults")
    return chosen, {"timings": timings, "disabled_optimizers": chosen, "texts": len(texts[:32])}


# OpenVINO settings export tries, first the plain one: every call at its own length, or lengths padded up to steps
# of 16 or 32 tokens so that calls repeat shapes the CPU plugin has already prepared.
OPENVINO_CANDIDATES: tuple[dict[str, Any], ...] = (
    {OPENVINO_STEP_KEY: 1},
    {OPENVINO_STEP_KEY: 16},
    {OPENVINO_STEP_KEY: 32},
)


def _settings_name(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def tune_openvino(
    folder: Path, texts: list[str], threads: int, precision: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenVINO settings for `folder`'s IR, and the timings that chose them.

    Each setting runs 16 texts one at a time (each call a different length, as a server sees them) and a batch of
    32 texts, interleaved over rounds; the cost is the geometric mean of the per-text b1 median and the b32 median.
    """
    probe = Classifier(folder, intra_op_threads=threads)  # its sidecar holds the build's precision
    singles = [probe.pad(probe.encode([text])).inputs for text in texts[:16]]
    batch = probe.pad(probe.encode(texts[:32])).inputs
    engines = [
        OpenVinoEngine(
            folder / MODEL_FILES["openvino"],
            threads=threads,
            length_step=settings[OPENVINO_STEP_KEY],
            pad_id=probe.pad_id,
        )
        for settings in OPENVINO_CANDIDATES
    ]
    samples: list[tuple[list[float], list[float]]] = [([], []) for _ in engines]
    for _ in range(ROUNDS):
        for engine, (b1, b32) in zip(engines, samples, strict=True):
            b1.append(statistics.median(_run_ms(engine, inputs) for inputs in singles))
            b32.append(_run_ms(engine, batch))
    costs = [float(np.sqrt(statistics.median(b1) * statistics.median(b32))) for b1, b32 in samples]
    best = min(range(len(costs)), key=costs.__getitem__)
    if costs[best] > costs[0] * (1 - MIN_GAIN):
        best = 0
    timings = {
        _settings_name(settings): {
            "b1_ms": round(statistics.median(b1), 3),
            "b32_ms": round(statistics.median(b32), 3),
        }
        for settings, (b1, b32) in zip(OPENVINO_CANDIDATES, samples, strict=True)
    }
    chosen = dict(OPENVINO_CANDIDATES[best]) | {OPENVINO_PRECISION_KEY: precision}
    logger.info("%s: OpenVINO tuning %s -> %s", folder.name, timings, _settings_name(chosen))
    return chosen, {"timings": timings, "chosen": chosen, "texts": len(singles)}


def _run_ms(engine: OpenVinoEngine, inputs: dict[str, np.ndarray]) -> float:
    started = time.perf_counter()
    engine.run(inputs)
    return (time.perf_counter() - started) * 1000
