"""Build the OpenVINO variants: the fp32 ONNX export read by OpenVINO and saved as IR, and its NNCF static int8.

Same builder signature as `textclf_export.builders` (`(source, out, **candidate) -> params`); the registry names
these with `engine="openvino"`. NNCF calibrates on the same unpadded calibration texts the ORT static variants use,
one text per sample (its statistics then see real activations only, never padding). Where openvino or nncf is not
installed the build raises, and export refuses the variant with that reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from textclf.errors import ExportError
from textclf.inference.engines import MODEL_FILES, cpu_has_native_bf16
from textclf.inference.folders import MODEL_FILE
from textclf_export.builders import BuildSource, calibration_inputs, copy_tokenizer

logger = logging.getLogger(__name__)

IR_FILE = MODEL_FILES["openvino"]


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ExportError("openvino is not installed (pip install 'textclf[openvino]')") from exc
    return openvino


def _save(model: Any, source: BuildSource, out: Path) -> None:
    ov = _openvino()
    out.mkdir(parents=True, exist_ok=True)
    # fp32 weights as they are: compressing them to fp16 on disk would change the numbers the gates judge.
    ov.save_model(model, str(out / IR_FILE), compress_to_fp16=False)
    copy_tokenizer(source.fp32, out)


def build_openvino_fp32(source: BuildSource, out: Path) -> dict[str, Any]:
    """The fp32 ONNX export converted to OpenVINO IR, unchanged and run in f32: the reference for OpenVINO's int8."""
    ov = _openvino()
    _save(ov.convert_model(str(source.fp32 / MODEL_FILE)), source, out)
    return {"converter": "openvino.convert_model", "openvino": ov.__version__, "inference_precision": "f32"}


def build_openvino_int8(
    source: BuildSource, out: Path, preset: str, inference_precision: str = "f32", smooth_quant: bool = True
) -> dict[str, Any]:
    """NNCF post-training static int8 (transformer scheme) of the fp32 graph, calibrated on the calibration texts.

    Args:
        preset: NNCF's quantization preset: "performance" (symmetric activations) or "mixed" (asymmetric).
        inference_precision: what the CPU plugin runs the graph's float parts in: "f32", or "bf16" (refused where
            the CPU has no native bf16, where the plugin would emulate it).
        smooth_quant: keep NNCF's SmoothQuant for transformers (moves activation outliers into the weights); off
            is the fallback when it costs accuracy on a model.
    """
    ov = _openvino()
    if inference_precision == "bf16" and not cpu_has_native_bf16():
        raise ExportError("this CPU has no native bf16 (AVX512-BF16 or AMX) for OpenVINO's CPU plugin")
    try:
        import nncf
    except ImportError as exc:
        raise ExportError("nncf is not installed (pip install 'textclf[export]')") from exc

    feeds = [
        {name: np.asarray([ids], dtype=np.int64) for name, ids in text.items()} for text in calibration_inputs(source)
    ]
    model = ov.convert_model(str(source.fp32 / MODEL_FILE))
    advanced = None if smooth_quant else nncf.AdvancedQuantizationParameters(smooth_quant_alpha=-1)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(feeds),
        preset=nncf.QuantizationPreset(preset),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(feeds),
        advanced_parameters=advanced,
    )
    _save(quantized, source, out)
    return {
        "quantizer": "nncf.quantize",
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
        "preset": preset,
        "inference_precision": inference_precision,
        "smooth_quant": smooth_quant,
        "calibration_texts": len(feeds),
    }
