"""The QDQ graph rewrites of export.fusions on small hand-built graphs, checked by running them in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from textclf_export.fusions import read_floats_before_quantization  # noqa: E402


def _residual_block() -> object:
    """x → Q → DQ, read by a MatMul (the int8 path) and by a residual Add (a float reader)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"]),
        helper.make_node("MatMul", ["x_dq", "w"], ["h"]),
        helper.make_node("Add", ["h", "x_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [
            numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.array(128, dtype=np.uint8), "zero"),
            numpy_helper.from_array(weight, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _run(model: object, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_float_readers_take_the_original_and_the_matmul_keeps_its_dequantized_input(tmp_path: Path) -> None:
    model = _residual_block()
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    weight = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    dequantized = (np.clip(np.round(x / 0.05) + 128, 0, 255) - 128) * np.float32(0.05)

    assert read_floats_before_quantization(model) == 1
    add = next(node for node in model.graph.node if node.op_type == "Add")
    matmul = next(node for node in model.graph.node if node.op_type == "MatMul")
    assert list(add.input) == ["h", "x"] and list(matmul.input) == ["x_dq", "w"]
    # The MatMul still sees the int8 round trip; the residual adds the exact input.
    np.testing.assert_allclose(_run(model, x, tmp_path), dequantized @ weight + x, rtol=1e-5, atol=1e-5)


def test_a_round_trip_only_floats_read_is_dropped_and_mismatched_scales_are_left_alone() -> None:
    model = _residual_block()
    matmul = next(node for node in model.graph.node if node.op_type == "MatMul")
    matmul.op_type = "Mul"  # now every reader is a float op: the DequantizeLinear and QuantizeLinear go dead
    assert read_floats_before_quantization(model) == 2
    assert {node.op_type for node in model.graph.node} == {"Mul", "Add"}

    other = _residual_block()
    dequantize = next(node for node in other.graph.node if node.op_type == "DequantizeLinear")
    dequantize.input[1] = "another_scale"  # not the same quantization: not a plain round trip of x
    assert read_floats_before_quantization(other) == 0


def test_attention_fusion_refuses_a_model_without_attention(tmp_path: Path) -> None:
    from textclf.errors import ExportError
    from textclf_export.builders import _fuse_attention

    source = tmp_path / "block.onnx"
    onnx.save(_residual_block(), str(source))
    with pytest.raises(ExportError, match="recognised no attention block"):
        _fuse_attention(source, tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()
