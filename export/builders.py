"""Build each ONNX variant with Optimum's exporter and ONNX Runtime's optimizer and quantizer.

Every variant builder named in the registry (`textclf.inference.variants`) has the signature
`(source: BuildSource, out: Path, **candidate) -> params` and writes a complete variant folder (model + tokenizer +
config; the caller adds textclf.json) into `out`, which the caller commits only after the gates pass.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from textclf.config import ExportConfig
from textclf.errors import ExportError
from textclf.hardware import isa_preset
from textclf.inference.engines import ENGINE_KEY
from textclf.inference.folders import MODEL_FILE, SIDECAR_FILE
from textclf_export.fusions import fold_bias_into_matmul_integer_to_float, read_floats_before_quantization

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSource:
    """What every builder may start from: the plain fp32 export and the texts to calibrate on."""

    fp32: Path
    work_dir: Path  # scratch space (calibration's augmented model) inside the export's temporary folder
    calibration_texts: list[str]
    max_seq_len: int
    cfg: ExportConfig


def write_sidecar(
    folder: Path, variant: str, max_seq_len: int, params: dict[str, Any], engine: str, settings: dict[str, Any]
) -> None:
    """The variant's textclf.json: its name, engine, window, build params and the engine settings export tuned."""
    sidecar = {"variant": variant, ENGINE_KEY: engine, "max_seq_len": max_seq_len, "params": params, **settings}
    (folder / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")


def export_fp32(checkpoint: Path, out: Path, opset: int | None = None) -> dict[str, Any]:
    """The plain ONNX export (Optimum `main_export`, task text-classification), tokenizer files beside it."""
    from optimum.exporters.onnx import main_export

    try:
        main_export(
            str(checkpoint),
            out,
            task="text-classification",
            opset=opset,
            do_validation=False,  # parity is judged by our own gate, against the same texts for every variant
            local_files_only=True,
        )
    except Exception as exc:  # the exporter raises many types; the message is what the user needs
        raise ExportError(f"ONNX export of {checkpoint} failed: {exc}") from exc
    if not (out / MODEL_FILE).is_file() or not (out / "tokenizer.json").is_file():
        raise ExportError(f"ONNX export of {checkpoint} wrote no model.onnx / tokenizer.json")
    return {"exporter": "optimum.exporters.onnx.main_export", "opset": opset or "default"}


def copy_tokenizer(source: Path, out: Path) -> None:
    # Optimum copies preprocessors along; make sure what the runtime reads is there whatever it does.
    for name in ("tokenizer.json", "config.json"):
        if not (out / name).exists():
            shutil.copy2(source / name, out / name)


def build_fp32(source: BuildSource, out: Path) -> dict[str, Any]:
    """The plain export itself."""
    shutil.copytree(source.fp32, out, dirs_exist_ok=True)
    return {"exporter": "optimum.exporters.onnx.main_export"}


def _ort_optimize(fp32: Path, out: Path, level: int, for_gpu: bool, fp16: bool) -> dict[str, Any]:
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    config = OptimizationConfig(optimization_level=level, optimize_for_gpu=for_gpu, fp16=fp16)
    ORTOptimizer.from_pretrained(fp32).optimize(config, out, file_suffix=None)
    copy_tokenizer(fp32, out)
    return {"optimization_level": level, "for_gpu": for_gpu, "fp16": fp16}


def build_optimized(source: BuildSource, out: Path) -> dict[str, Any]:
    """ORT graph optimization (attention / LayerNorm / GELU / embedding fusions) for the CPU."""
    return _ort_optimize(source.fp32, out, source.cfg.optimization_level, for_gpu=False, fp16=False)


def build_fp16(source: BuildSource, out: Path) -> dict[str, Any]:
    """GPU graph optimization with fp16 weights and activations."""
    return _ort_optimize(source.fp32, out, source.cfg.optimization_level, for_gpu=True, fp16=True)


def build_fp16_cpu(source: BuildSource, out: Path) -> dict[str, Any]:
    """The fp32 graph converted to fp16 (inputs and outputs stay as they are), for the CPU provider."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source.fp32 / MODEL_FILE)))
    model.convert_float_to_float16(keep_io_types=True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(out / MODEL_FILE))
    copy_tokenizer(source.fp32, out)
    return {"converter": "onnxruntime.transformers OnnxModel.convert_float_to_float16", "keep_io_types": True}


def _quantization_config(is_static: bool, per_channel: bool, reduce_range: bool, operators: list[str] | None) -> Any:
    from optimum.onnxruntime import AutoQuantizationConfig

    preset = isa_preset()
    factory = getattr(AutoQuantizationConfig, preset)
    kwargs: dict[str, Any] = {"is_static": is_static, "per_channel": per_channel}
    if preset in ("avx2", "avx512"):  # only these presets take reduce_range
        kwargs["reduce_range"] = reduce_range
    if operators is not None:
        kwargs["operators_to_quantize"] = operators
    return factory(**kwargs), preset


def build_int8_dynamic(source: BuildSource, out: Path, per_channel: bool, reduce_range: bool) -> dict[str, Any]:
    """Dynamic int8: weights quantized offline, activation scales computed per batch at run time."""
    from optimum.onnxruntime import ORTQuantizer

    config, preset = _quantization_config(False, per_channel, reduce_range, None)
    ORTQuantizer.from_pretrained(source.fp32).quantize(config, out, file_suffix=None)
    copy_tokenizer(source.fp32, out)
    return {"preset": preset, "per_channel": per_channel, "reduce_range": reduce_range}


def build_int8_static(source: BuildSource, out: Path, per_channel: bool, operators: list[str]) -> dict[str, Any]:
    """Static int8 with activation ranges calibrated on a sample of the train split."""
    from datasets import Dataset
    from optimum.onnxruntime import AutoCalibrationConfig, ORTQuantizer

    fp32, method = source.fp32, source.cfg.calibration_method
    quantizer = ORTQuantizer.from_pretrained(fp32)
    feeds = _CalibrationFeeds(source)
    calibration = {
        "minmax": AutoCalibrationConfig.minmax,
        "entropy": AutoCalibrationConfig.entropy,
        "percentile": AutoCalibrationConfig.percentiles,
    }[method](Dataset.from_list(feeds.inputs))  # optimum records the dataset's name and size from it
    config, preset = _quantization_config(True, per_channel, False, operators)
    # Optimum's fit collects every text in one call, which Entropy and Percentile cannot do with texts of different
    # lengths, and its partial_fit makes a new calibrator per call: so its calibrator is fed one text per collect,
    # as int8-qdq's is (see _CalibrationFeeds).
    calibrator = calibration.create_calibrator(
        onnx_model_path=quantizer.onnx_model_path,
        operators_to_quantize=config.operators_to_quantize,
        augmented_model_name=str(source.work_dir / "augmented_model.onnx"),  # never into the current directory
    )
    with contextlib.redirect_stdout(io.StringIO()):  # a histogram line per collect
        for index in range(len(feeds)):
            feeds.set_range(index, index + 1)
            calibrator.collect_data(feeds)
        ranges = calibrator.compute_data()
    quantizer.quantize(config, out, file_suffix=None, calibration_tensors_range=ranges)
    copy_tokenizer(fp32, out)
    return {
        "preset": preset,
        "per_channel": per_channel,
        "calibration_method": method,
        "calibration_samples": len(source.calibration_texts),
        "operators": operators,
    }


def build_int8_qdq(source: BuildSource, out: Path, per_channel: bool, fused_attention: bool = False) -> dict[str, Any]:
    """Static int8 of every MatMul in QDQ form, with each MatMul's output left in float: ORT then runs
    MatMulIntegerToFloat (int8 GEMM, float result with its scale) instead of QLinearMatMul followed by
    DequantizeLinear, which took 12-15 % of int8-static's time at b32 s128.

    Without `fused_attention` attention's activation × activation MatMuls are int8 too. With it, ORT's transformer
    optimizer first fuses each attention block into one fp32 MultiHeadAttention op (scale, mask, softmax and the
    head transposes in one kernel) and only the projections around it are quantized."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = source.fp32 / MODEL_FILE
    params: dict[str, Any] = {}
    if fused_attention:
        model = source.work_dir / "int8-qdq-attention.onnx"
        params["attention_fused"] = _fuse_attention(source.fp32 / MODEL_FILE, model)
    inferred = source.work_dir / "int8-qdq-shapes.onnx"
    # Symbolic shape inference gives the quantizer every activation's type; auto_merge settles the dynamic axes
    # the exporter left unnamed (without it the inference stops short and those MatMuls stay float).
    quant_pre_process(str(model), str(inferred), auto_merge=True)
    out.mkdir(parents=True, exist_ok=True)
    # Entropy and Percentile print a line per collect, one per calibration text: kept out of the export's output.
    with contextlib.redirect_stdout(io.StringIO()):
        _quantize_qdq(inferred, out, source, per_channel)
    quantized = onnx.load(str(out / MODEL_FILE))
    params["biases_folded"] = fold_bias_into_matmul_integer_to_float(quantized)
    params["float_reads"] = read_floats_before_quantization(quantized)
    onnx.save(quantized, str(out / MODEL_FILE))
    copy_tokenizer(source.fp32, out)
    return {
        "quantizer": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "per_channel": per_channel,
        "matmul_output": "float (MatMulIntegerToFloat)",
        "attention": "fp32 MultiHeadAttention" if fused_attention else "int8 MatMuls",
        **params,
        "calibration_method": source.cfg.calibration_method,
        "calibration_samples": len(source.calibration_texts),
    }


def _quantize_qdq(model: Path, out: Path, source: BuildSource, per_channel: bool) -> None:
    """ORT's static quantizer over every MatMul, QDQ form, float MatMul outputs, calibrated one text at a time."""
    import onnxruntime.quantization as oq

    oq.quantize_static(
        str(model),
        str(out / MODEL_FILE),
        _CalibrationFeeds(source),
        quant_format=oq.QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        reduce_range=False,
        activation_type=oq.QuantType.QUInt8,
        weight_type=oq.QuantType.QInt8,
        calibrate_method=oq.CalibrationMethod[_ORT_CALIBRATION[source.cfg.calibration_method]],
        extra_options={
            "OpTypesToExcludeOutputQuantization": ["MatMul"],
            # Despite its name it strides any calibrator: one collect per text (see _CalibrationFeeds).
            "CalibStridedMinMax": 1,
        },
    )


def _fuse_attention(fp32_model: Path, out: Path) -> int:
    """ORT's transformer optimizer with only its attention fusion on, in its MultiHeadAttention form (the Q/K/V
    MatMuls stay outside the op, so they can be quantized). Returns the number of attention blocks fused."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for switch in (
        "enable_gelu",
        "enable_layer_norm",
        "enable_skip_layer_norm",
        "enable_bias_skip_layer_norm",
        "enable_embed_layer_norm",
        "enable_bias_gelu",
        "enable_gelu_approximation",
    ):
        setattr(options, switch, False)
    options.use_multi_head_attention = True
    options.use_raw_attention_mask(True)  # the 0/1 mask as given: no assumption that padding sits on the right
    # num_heads/hidden_size 0: the optimizer reads them from each block's Reshape, whatever the config calls them.
    optimized = optimize_model(
        str(fp32_model), model_type="bert", num_heads=0, hidden_size=0, optimization_options=options, opt_level=0
    )
    fused = int(optimized.get_fused_operator_statistics().get("MultiHeadAttention", 0))
    if fused == 0:
        raise ExportError("ONNX Runtime's attention fusion recognised no attention block in this model")
    optimized.save_model_to_file(str(out))
    return fused


_ORT_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class _CalibrationFeeds(CalibrationDataReader):
    """onnxruntime's CalibrationDataReader protocol over the calibration texts, one unpadded text per feed, fed to
    the calibrator one text at a time (`CalibStridedMinMax: 1` makes quantize_static walk `set_range`). So every
    method sees real activations only, never padding: MinMax merges each text's range, Entropy and Percentile each
    text's histogram (they stack a collect's outputs, so texts of different lengths cannot share one). And memory
    holds one text's activations: all at once, Percentile over 1,024 texts padded to 128 tokens was OOM-killed at
    24 GiB here."""

    def __init__(self, source: BuildSource) -> None:
        self.inputs = calibration_inputs(source)
        self._feeds = [{name: np.asarray([ids], dtype=np.int64) for name, ids in text.items()} for text in self.inputs]
        self._next = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def rewind(self) -> None:
        self._next = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._feeds[start_index:end_index])


def calibration_inputs(source: BuildSource) -> list[dict[str, list[int]]]:
    """Each calibration text's model inputs, by the graph's input names, truncated at max_seq_len, unpadded."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source.fp32 / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=source.max_seq_len)
    names = _onnx_input_names(source.fp32 / MODEL_FILE)
    inputs = []
    for encoding in tokenizer.encode_batch(source.calibration_texts):
        columns = {
            "input_ids": encoding.ids,
            "attention_mask": encoding.attention_mask,
            "token_type_ids": encoding.type_ids,
        }
        inputs.append({name: columns[name] for name in names})
    return inputs


def _onnx_input_names(model: Path) -> list[str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return [i.name for i in session.get_inputs()]
