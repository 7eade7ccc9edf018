"""The machine's fp32 GEMM rate (a large MatMul through onnxruntime) and a BERT model's FLOPs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def bert_flops(config: dict[str, Any], batch: int, seq_len: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of a BERT-style encoder + pooler.

    Per layer and sequence: Q, K, V and output projections 8·s·h², attention scores and context 4·s²·h,
    feed-forward 4·s·h·i. Embedding lookups and LayerNorm/softmax are ignored (not GEMM work).
    """
    hidden = int(config["hidden_size"])
    inner = int(config.get("intermediate_size", 4 * hidden))
    layers = int(config["num_hidden_layers"])
    per_layer = 8 * seq_len * hidden**2 + 4 * seq_len**2 * hidden + 4 * seq_len * hidden * inner
    pooler = 2 * hidden**2
    return float(batch * (layers * per_layer + pooler))


def gemm_rate(threads: int, size: int = 2048, repeats: int = 7) -> dict[str, float]:
    """fp32 FLOP/s of a size×size MatMul in onnxruntime with `threads` intra-op threads (median of repeats)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((size, size), dtype=np.float32) for name in ("a", "b")}
    session.run(None, feeds)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - started)
    median = float(np.median(seconds))
    return {"size": size, "threads": threads, "median_s": median, "flops_per_s": 2 * size**3 / median}
