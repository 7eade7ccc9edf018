"""The variant registry: every variant export can build, in one place.

A variant is a name, the builder in the export stage that makes its folder, the engine that runs it, the settings
that builder tries in order until one passes the gates, the parity limit it must meet, and the device it is judged
and timed on. Export, config validation and the benchmarks all read this table; adding a variant means one entry
here and one builder. Torch-free and optimum-free: the builders are named, not imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class VariantSpec:
    name: str
    builder: str  # a builder function of the export stage: (source, out, **candidate) -> params in the manifest
    summary: str
    device: Literal["cpu", "cuda"] = "cpu"  # where the gates judge it and where it can serve
    engine: Literal["onnxruntime", "openvino"] = "onnxruntime"  # what runs it (textclf.inference.engines)
    candidates: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({},))
    parity_field: str | None = None  # the ExportConfig field with its max |Δ logit| (None: recorded, not gated)
    # In export.variants unless the config says otherwise: the variants some CPU measured has served, and fp32.
    default: bool = False
    # Kept only when export's timing beats fp32's on this machine: a reduced-precision float graph is worth its
    # accuracy risk only where ONNX Runtime's CPU provider has fast kernels for it (AVX512-FP16, AMX).
    must_beat_fp32: bool = False


_SPECS = (
    VariantSpec(
        "fp32",
        "build_fp32",
        "the plain Optimum export: the parity reference of every other variant",
        parity_field="max_fp32_parity",
        default=True,  # the parity reference of every other variant
    ),
    VariantSpec(
        "optimized",
        "build_optimized",
        "ORT graph optimization at export.optimization_level (attention, LayerNorm, GELU fusions)",
        parity_field="max_optimized_parity",
    ),
    VariantSpec(
        "int8-dynamic",
        "build_int8_dynamic",
        "weights int8 offline, activation scales per batch at run time (batch-variant by construction)",
        # The ISA preset's default first, then reduce_range (avoids u8s8 saturation without VNNI), then per-tensor.
        candidates=(
            {"per_channel": True, "reduce_range": False},
            {"per_channel": True, "reduce_range": True},
            {"per_channel": False, "reduce_range": False},
        ),
    ),
    VariantSpec(
        "int8-static",
        "build_int8_static",
        "weights and activation scales int8, calibrated on train texts (batch-invariant scales)",
        # MatMuls only first (residual Adds feed LayerNorm and are the usual accuracy loss), then both.
        candidates=(
            {"per_channel": True, "operators": ["MatMul"]},
            {"per_channel": False, "operators": ["MatMul"]},
            {"per_channel": True, "operators": ["MatMul", "Add"]},
        ),
    ),
    VariantSpec(
        "int8-qdq",
        "build_int8_qdq",
        "static int8 of every MatMul in QDQ form with float outputs and biases folded in (MatMulIntegerToFloat)",
        candidates=({"per_channel": True}, {"per_channel": False}),
        default=True,  # served: 2-core AMD EPYC Zen 4, 2026-12-02 (README results table)
    ),
    VariantSpec(
        "int8-qdq-mha",
        "build_int8_qdq",
        "int8-qdq's projections around ORT's fused fp32 MultiHeadAttention (mask, softmax, head transposes in one op)",
        candidates=({"per_channel": True, "fused_attention": True}, {"per_channel": False, "fused_attention": True}),
        default=True,  # served: Intel Xeon 2026-12-02, AMD EPYC Zen 3 2026-12-02, Zen 5 2026-12-01 (README results)
    ),
    VariantSpec(
        "fp16-cpu",
        "build_fp16_cpu",
        "fp16 weights and activations (float32 inputs and outputs) for the CPU provider",
        must_beat_fp32=True,
    ),
    VariantSpec(
        "openvino-fp32",
        "build_openvino_fp32",
        "the fp32 export as OpenVINO IR on OpenVINO's CPU plugin: the reference for openvino-int8",
        engine="openvino",
        parity_field="max_optimized_parity",
    ),
    VariantSpec(
        "openvino-int8",
        "build_openvino_int8",
        "NNCF post-training static int8 (transformer scheme, SmoothQuant) of the fp32 graph, on OpenVINO's CPU plugin",
        engine="openvino",
        # bf16 for the float parts first where the CPU has it natively (refused elsewhere), then f32; then the
        # asymmetric preset and no SmoothQuant as accuracy fallbacks.
        candidates=(
            {"preset": "performance", "inference_precision": "bf16"},
            {"preset": "performance", "inference_precision": "f32"},
            {"preset": "mixed", "inference_precision": "f32"},
            {"preset": "performance", "inference_precision": "f32", "smooth_quant": False},
        ),
        default=True,  # served: 2-core AMD EPYC Zen 4, 2026-12-06 (reports/zen4/default)
    ),
    VariantSpec(
        "fp16",
        "build_fp16",
        "fp16 weights and activations after GPU graph optimization, for the CUDA execution provider",
        device="cuda",
    ),
)
VARIANTS: dict[str, VariantSpec] = {spec.name: spec for spec in _SPECS}
# The others (optimized, int8-dynamic, int8-static, fp16-cpu, openvino-fp32; fp16 on CUDA) never served on a CPU
# measured; each stays one `--set export.variants=[...]` away and builds from the fp32 export alone, as these do.
DEFAULT_VARIANTS: tuple[str, ...] = tuple(spec.name for spec in _SPECS if spec.default)


def variant_spec(name: str) -> VariantSpec:
    """The registry entry of `name`; a ValueError naming the known variants otherwise."""
    spec = VARIANTS.get(name)
    if spec is None:
        raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return spec


def variants_on(device: str) -> tuple[str, ...]:
    """The variants judged and served on `device` ("cpu" or "cuda"), in registry order."""
    return tuple(spec.name for spec in _SPECS if spec.device == device)
