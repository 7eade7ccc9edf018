"""The inference engines behind the runtime's one narrow interface: padded int64 inputs in, float32 logits out.

Two engines run an exported variant: ONNX Runtime (`model.onnx`, every ORT variant) and OpenVINO's CPU plugin
(`model.xml` + `model.bin`, the NNCF int8 and fp32 IR variants). A variant's sidecar (`textclf.json`) names its
engine; a folder without one is an ORT folder, as export wrote them before OpenVINO. `RoutedEngine` runs a call
whose texts are padded past one tokens-per-text threshold on a second loaded engine (where export measured one faster
on long texts), every other call on the serving one.
Each engine's package is imported when a variant needs it, so a Bento ships only the engines it serves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from textclf.errors import ArtifactError

logger = logging.getLogger(__name__)

EngineName = Literal["onnxruntime", "openvino"]
ENGINE_KEY = "engine"  # sidecar: which engine runs the folder
MODEL_FILES: dict[EngineName, str] = {"onnxruntime": "model.onnx", "openvino": "model.xml"}
# OpenVINO pads each call's sequence length up to a multiple of this (see OpenVinoEngine.run for why).
OPENVINO_LENGTH_STEP = 16


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels here (AVX512-BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class Engine(Protocol):
    """What the runtime needs of an engine."""

    name: EngineName
    input_names: list[str]
    threads: int

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Padded inputs (one row per text, `input_names` as keys) → float32 logits, one row per text."""
        ...

    def describe(self) -> str:
        """One line for logs and `GET /model`: engine, device, threads."""
        ...

    def parts(self) -> tuple[Engine, ...]:
        """The engines that run this one's calls: itself, or a routed pair's two (to warm up or name each)."""
        ...


def create_session(
    model: Path,
    *,
    intra_op_threads: int,
    inter_op_threads: int = 1,
    allow_spinning: bool = True,
    providers: list[str] | None = None,
    disabled_optimizers: list[str] | None = None,
    profile_prefix: str | None = None,
) -> Any:
    """An ONNX Runtime session built the one way the runtime, export's tuning and the profiler all use."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning pool threads win when ORT owns the cores (benchmarks); in a server they steal the CPU the
    # event loop needs to parse the next requests, so the service may turn them off (serve.ort_spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(
        str(model),
        sess_options=options,
        providers=providers or ["CPUExecutionProvider"],
        disabled_optimizers=disabled_optimizers or None,
    )


def providers_for(use_cuda: bool) -> list[str]:
    """CUDA first when asked and present in this onnxruntime build, CPU always."""
    import onnxruntime as ort

    if use_cuda:
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        logger.warning("CUDA was asked for but this onnxruntime build has no CUDAExecutionProvider; using the CPU")
    return ["CPUExecutionProvider"]


class OrtEngine:
    """An ONNX Runtime session on the CPU (or CUDA) provider."""

    name: EngineName = "onnxruntime"

    def __init__(
        self,
        model: Path,
        *,
        threads: int,
        inter_op_threads: int = 1,
        use_cuda: bool = False,
        allow_spinning: bool = True,
        disabled_optimizers: list[str] | None = None,
    ) -> None:
        self.threads = threads
        self.providers = providers_for(use_cuda)
        self.disabled_optimizers = list(disabled_optimizers or [])
        self.session = create_session(
            model,
            intra_op_threads=threads,
            inter_op_threads=inter_op_threads,
            allow_spinning=allow_spinning,
            providers=self.providers,
            disabled_optimizers=disabled_optimizers,
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run(None, inputs)[0], dtype=np.float32)

    def describe(self) -> str:
        return f"onnxruntime {self.providers[0]}, {self.threads} intra-op threads"

    def parts(self) -> tuple[Engine, ...]:
        return (self,)


class OpenVinoEngine:
    """An OpenVINO IR compiled for the CPU plugin, with one reused infer request (the caller's thread owns it).

    Sequence lengths are padded up to a multiple of `length_step` (attention-masked padding does not change a
    BERT's logits; the batch-invariance gate checks it): the CPU plugin prepares its kernels for each new input
    shape, and with texts of every length nearly every call would be a new shape; with steps the shapes repeat.

    Shapes are not pre-warmed at load. Measured on the default run's `openvino-int8` (2 threads, 2-core AMD EPYC
    Zen 5, openvino 2026.4.1, three A/B runs each): the first call at a shape costs ~4-8 ms more, once per worker and
    shape (b1-b8 × 32-96 tokens); running b1 at every 16-token step up to 128 at load took ~80 ms and covered b1
    only, b1-b8 × those steps ~600 ms; after that first call, times were the same either way. A call whose shape
    differs from the previous one costs more than a repeat (min of 15 round medians: 1.93 vs 1.49 ms on 2 threads,
    3.10 vs 2.47 on 1, b1 × 16-64), and one infer request per shape does not avoid it (1.85 / 3.06 ms): the cost is
    the compiled model's, which is why export times each case on calls of real texts of changing lengths
    (`textclf_export.gates.time_variants`).
    """

    name: EngineName = "openvino"

    def __init__(
        self,
        model: Path,
        *,
        threads: int,
        hint: str = "LATENCY",
        length_step: int = OPENVINO_LENGTH_STEP,
        precision: str = "f32",
        pad_id: int = 0,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ArtifactError(
                f"{model}: an OpenVINO variant, but openvino is not installed (pip install 'textclf[openvino]')"
            ) from exc
        self.threads = threads
        self.hint = hint
        self.length_step = max(1, length_step)
        self.precision = precision
        self.pad_id = pad_id
        core = ov.Core()
        # The precision is always explicit: on a CPU with native bf16 the plugin's default is bf16, not the graph's
        # own fp32 (seen: 1.6e-3 |Δ logit| on an fp32 IR), and export's gates judge exactly what will run.
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": hint,
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": precision,
            # No pinning: two single-thread workers would each pin their thread to the same first core.
            "ENABLE_CPU_PINNING": False,
        }
        self.compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self._output = self.compiled.output(0)

    def padded_length(self, length: int) -> int:
        """The sequence length a call of `length` tokens runs at (the next multiple of `length_step`)."""
        return -(-length // self.length_step) * self.length_step

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        length = next(iter(inputs.values())).shape[1]
        target = self.padded_length(length)
        if target != length:
            inputs = {
                name: _pad_columns(array, target, self.pad_id if name == "input_ids" else 0)
                for name, array in inputs.items()
            }
        result = self.request.infer(inputs, share_inputs=True)
        return np.array(result[self._output], dtype=np.float32)

    def describe(self) -> str:
        steps = f"lengths in steps of {self.length_step}"
        return f"openvino CPU {self.precision}, {self.threads} threads, {self.hint}, {steps}"

    def parts(self) -> tuple[Engine, ...]:
        return (self,)


def _pad_columns(array: np.ndarray, width: int, value: int) -> np.ndarray:
    out = np.full((array.shape[0], width), value, dtype=array.dtype)
    out[:, : array.shape[1]] = array
    return out


class RoutedEngine:
    """Two engines over one model: a call whose texts are padded past `max_short_tokens_per_text` tokens runs on
    `long`, every other call on `short`. Stateless: where a call runs depends on that call's inputs alone."""

    def __init__(self, short: Engine, long: Engine, max_short_tokens_per_text: int) -> None:
        if set(short.input_names) != set(long.input_names):
            raise ArtifactError(f"routed engines take different inputs: {short.input_names} vs {long.input_names}")
        self.short = short
        self.long = long
        self.max_short_tokens_per_text = max_short_tokens_per_text
        self.name = short.name
        self.input_names = short.input_names
        self.threads = short.threads

    def engine_for(self, tokens_per_text: int) -> Engine:
        """The engine of a call whose texts are padded to `tokens_per_text` tokens."""
        return self.long if tokens_per_text > self.max_short_tokens_per_text else self.short

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.engine_for(next(iter(inputs.values())).shape[1]).run(inputs)

    def describe(self) -> str:
        return (
            f"up to {self.max_short_tokens_per_text} tokens a text: {self.short.describe()}; "
            f"longer: {self.long.describe()}"
        )

    def parts(self) -> tuple[Engine, ...]:
        return (self.short, self.long)
