"""Where a variant's time goes: ONNX Runtime's own profiler, summed by operator type.

The session is built like the runtime's (same threads, sequential execution, full graph optimization), so the op
types are those of the graph ORT actually runs after its fusions (e.g. MatMulIntegerToFloat, SkipLayerNormalization).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from textclf.engines import create_session
from textclf.runtime import DISABLED_OPTIMIZERS_KEY, MODEL_FILE, read_sidecar
from textclf_benchmarks.schema import OpProfile


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
        runs=runs,
        ms_per_run=sum(e["dur"] for e in timed_runs) / 1000 / max(1, len(timed_runs)),
        node_ms_per_run=total_us / 1000 / runs,
        share={op: us / total_us for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])} if total_us else {},
    )
