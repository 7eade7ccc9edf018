"""Session tuning: which of ONNX Runtime's own graph fusions to switch off for a variant, by timing on this machine.

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

from textclf.engines import create_session
from textclf.runtime import MODEL_FILE, Classifier

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
