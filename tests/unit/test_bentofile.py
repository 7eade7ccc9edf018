"""The Bento ships only the engines its served variants run on."""

from __future__ import annotations

from importlib import metadata

from textclf.bento import BENTOFILE, bentofile_for


def _names(spec: dict) -> set[str]:  # type: ignore[type-arg]
    return {p.split("==")[0].split(">")[0] for p in spec["python"]["packages"]}


def test_each_engine_alone_ships_alone() -> None:
    ort = bentofile_for({"onnxruntime"})
    assert "onnxruntime" in _names(ort) and "openvino" not in _names(ort)
    assert f"onnxruntime=={metadata.version('onnxruntime')}" in ort["python"]["packages"]
    ov = bentofile_for({"openvino"})
    assert "openvino" in _names(ov) and "onnxruntime" not in _names(ov)
    assert {"tokenizers", "numpy"} <= _names(ov)


def test_a_route_across_engines_ships_both_and_the_gpu_flavour_keeps_its_own_onnxruntime() -> None:
    assert {"onnxruntime", "openvino"} <= _names(bentofile_for({"onnxruntime", "openvino"}))
    gpu = bentofile_for({"onnxruntime"}, BENTOFILE.with_name("bentofile.gpu.yaml"))
    assert "onnxruntime-gpu" in _names(gpu) and "onnxruntime" not in _names(gpu)
