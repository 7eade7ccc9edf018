"""Where a variant's time goes: each engine's own profiler, summed by operator type.

ONNX Runtime: the session is built like the runtime's (same threads, sequential execution, full graph
optimization), so the op types are those of the graph ORT actually runs after its fusions (e.g.
MatMulIntegerToFloat, SkipLayerNormalization). OpenVINO: the CPU plugin's per-node counters (`PERF_COUNT`) on a
model compiled with the engine's own settings; its node types are those it runs after its own fusions (e.g.
FullyConnected, Subgraph for fused element-wise chains, ScaledDotProductAttention).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from textclf.inference.engines import MODEL_FILES, OpenVinoEngine, OrtEngine, create_session
from textclf.inference.runtime import DISABLED_OPTIMIZERS_KEY, MODEL_FILE, read_sidecar
from textclf_benchmarks.engines import Engine, RuntimeEngine
from textclf_benchmarks.schema import ONE_THREAD_SUFFIX, OpProfile

logger = logging.getLogger(__name__)


def profile_engines(engines: list[Engine], variants: set[str], case: tuple[int, int]) -> dict[str, OpProfile]:
    """Each engine's own per-op split at `case` (batch, seq_len) for the given variants (their sweep engines on the
    sweep's threads: not the one-thread row, not the routed pair, whose parts are profiled alone)."""
    profiles = {}
    for engine in engines:
        if not isinstance(engine, RuntimeEngine) or engine.variant not in variants:
            continue
        if engine.name.endswith(ONE_THREAD_SUFFIX):
            continue
        inner = engine.classifier.engine
        if not isinstance(inner, (OrtEngine, OpenVinoEngine)):
            continue  # a routed engine (`served`)
        logger.info("profiling %s at b%d s%d", engine.name, *case)
        inputs = engine.fixed(*case)
        folder = engine.classifier.variant_dir
        if isinstance(inner, OpenVinoEngine):
            profiles[engine.name] = profile_openvino_ops(inner, folder, inputs)
        else:
            profiles[engine.name] = profile_ops(folder, inputs, inner.threads)
    return profiles


def profile_ops(variant_dir: Path, inputs: dict[str, np.ndarray], threads: int, runs: int = 10) -> OpProfile:
    """Run `inputs` `runs` times (after one warm-up) with profiling on and split the node time by op type."""
    with tempfile.TemporaryDirectory(prefix="textclf-profile-") as tmp:
        session = create_session(
            variant_dir / MODEL_FILE,
            intra_op_threads=threads,
            disabled_optimizers=read_sidecar(variant_dir).get(DISABLED_OPTIMIZERS_KEY),
            profile_prefix=str(Path(tmp) / "ort"),
        )
        session.run(None, inputs)  # warm-up, excluded below by its run index
        for _ in range(runs):
            session.run(None, inputs)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    warm_up_end = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else 0
    for event in events:
        # One "<node>_kernel_time" event per node and run; the warm-up run's events come before its end.
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if event["ts"] < warm_up_end:
            continue
        per_op[event["args"]["op_name"]] += event["dur"]
    total_us = sum(per_op.values())
    timed_runs = model_runs[1:]
    return OpProfile(
        engine="onnxruntime",
        runs=runs,
        ms_per_run=sum(e["dur"] for e in timed_runs) / 1000 / max(1, len(timed_runs)),
        node_ms_per_run=total_us / 1000 / runs,
        share={op: us / total_us for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])} if total_us else {},
    )


def profile_openvino_ops(
    engine: OpenVinoEngine, variant_dir: Path, inputs: dict[str, np.ndarray], runs: int = 10
) -> OpProfile:
    """Run `inputs` `runs` times (after one warm-up) on a copy of `engine` compiled with OpenVINO's per-node counters
    on, and split the node time by node type."""
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": engine.threads,
        "PERFORMANCE_HINT": engine.hint,
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": engine.precision,
        ov.properties.enable_profiling(): True,
    }
    compiled = core.compile_model(core.read_model(str(variant_dir / MODEL_FILES["openvino"])), "CPU", config)
    request = compiled.create_infer_request()
    inputs = _padded(engine, inputs)
    request.infer(inputs, share_inputs=True)  # warm-up: the first call at a shape prepares its kernels
    before = _node_us(request.get_profiling_info(), calls=1)
    started = time.perf_counter()
    for _ in range(runs):
        request.infer(inputs, share_inputs=True)
    wall_ms = (time.perf_counter() - started) * 1000
    after = _node_us(request.get_profiling_info(), calls=1 + runs)
    per_type: dict[str, float] = defaultdict(float)
    for name, (node_type, total_us) in after.items():
        per_type[node_type] += max(0.0, total_us - before.get(name, (node_type, 0.0))[1])
    total_us = sum(per_type.values())
    return OpProfile(
        engine="openvino",
        runs=runs,
        ms_per_run=wall_ms / runs,
        node_ms_per_run=total_us / 1000 / runs,
        share={op: us / total_us for op, us in sorted(per_type.items(), key=lambda kv: -kv[1])} if total_us else {},
    )


def _node_us(info: list[Any], calls: int) -> dict[str, tuple[str, float]]:
    """node name -> (node type, µs over every call so far). The CPU plugin reports each node's mean time over every
    call since it was compiled (whole µs), so the timed runs' share is the difference of two totals."""
    return {
        node.node_name: (node.node_type, node.real_time.total_seconds() * 1e6 * calls)
        for node in info
        if node.status == node.Status.EXECUTED
    }


def _padded(engine: OpenVinoEngine, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inputs padded to the engine's length step, as `OpenVinoEngine.run` pads every call."""
    length = next(iter(inputs.values())).shape[1]
    extra = -(-length // engine.length_step) * engine.length_step - length
    if not extra:
        return inputs
    return {
        name: np.pad(array, ((0, 0), (0, extra)), constant_values=engine.pad_id if name == "input_ids" else 0)
        for name, array in inputs.items()
    }
