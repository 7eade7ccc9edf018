"""The inference engines behind the runtime's one narrow interface: padded int64 inputs in, float32 logits out.

Two engines run an exported variant: ONNX Runtime (`model.onnx`, every ORT variant) and OpenVINO's CPU plugin
(`model.xml` + `model.bin`, the NNCF int8 and fp32 IR variants). A variant's sidecar (`textclf.json`) names its
engine; a folder without one is an ORT folder, as export wrote them before OpenVINO. `RoutedEngine` runs each
call on one of two loaded engines by the call's padded token count (export measures where one overtakes the other).
Each engine's package is imported when a variant needs it, so a Bento ships only the engines it serves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from textclf.artifacts.schema import route_goes_long
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
    the compiled model's, which is why export times engines on calls whose shapes change (export/routing.py).
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


def _pad_columns(array: np.ndarray, width: int, value: int) -> np.ndarray:
    out = np.full((array.shape[0], width), value, dtype=array.dtype)
    out[:, : array.shape[1]] = array
    return out


class RoutedEngine:
    """Two engines over one model: calls over `max_short_tokens` padded tokens whose texts are padded past
    `max_short_length` tokens run on `long`, the others on `short` (`textclf.artifacts.schema.route_goes_long`).

    With `long_on_repeat`, a short call runs on `long` too when its exact shape repeats: it is the shape of `long`'s
    last call, or of the two calls before it (a run of one shape has begun: bulk rows all cut at max_seq_len, a client
    sending one length). Exact, not as `long` pads it: real single texts of different lengths pad to the same
    OpenVINO shape, and the padded rule sent 65 % of them to OpenVINO, where they ran no faster (200 eval texts of the
    default run through `predict`, int8-qdq-mha short and openvino-int8 over 64 tokens, ORT not spinning, 20 shuffled
    rounds, 2-core AMD EPYC Zen 4, 2026-12-03, round-best / median ms: exact rule 3.57 / 4.44 with no call on
    OpenVINO, int8-qdq-mha alone 3.69 / 4.47, padded rule 3.80 / 4.57, openvino-int8 alone 3.90 / 4.85). OpenVINO
    prepares its kernels again whenever a call's shape differs from its last one, so on changing shapes ONNX Runtime
    wins short calls, and on repeated ones OpenVINO can win them all; export times both orders and sets the flag only
    where `long` won every short shape repeated. One thread owns the engine (the batcher's, or the bulk loop's), so
    the last shapes need no lock.

    `calls` counts the calls each engine ran, by `names` (the variants' names where the caller gives them): the
    benchmarks read which engine ran each case.
    """

    def __init__(
        self,
        short: Engine,
        long: Engine,
        max_short_tokens: int,
        *,
        max_short_length: int = 0,
        long_on_repeat: bool = False,
        names: tuple[str, str] = ("short", "long"),
    ) -> None:
        if short.input_names != long.input_names and set(short.input_names) != set(long.input_names):
            raise ArtifactError(f"routed engines take different inputs: {short.input_names} vs {long.input_names}")
        self.short = short
        self.long = long
        self.max_short_tokens = max_short_tokens
        self.max_short_length = max_short_length
        self.long_on_repeat = long_on_repeat
        self.name = short.name
        self.input_names = short.input_names
        self.threads = short.threads
        self.names = names
        self.calls: dict[str, int] = dict.fromkeys(names, 0)
        self._long_last: tuple[int, int] | None = None
        self._recent: list[tuple[int, int] | None] = [None, None]  # the shapes of the two calls before this one

    def engine_for(self, rows: int, length: int) -> Engine:
        """The engine of a call of `rows` texts padded to `length` tokens, by size alone."""
        return self.long if route_goes_long(rows, length, self.max_short_tokens, self.max_short_length) else self.short

    def engine_for_call(self, inputs: dict[str, np.ndarray]) -> Engine:
        """The engine of one call, by its size and (with `long_on_repeat`) whether its exact shape repeats."""
        rows, length = next(iter(inputs.values())).shape
        engine = self.engine_for(rows, length)
        if not self.long_on_repeat:
            return engine
        shape = (int(rows), int(length))
        if engine is self.short and (shape == self._long_last or self._recent == [shape, shape]):
            engine = self.long
        self._recent = [self._recent[1], shape]
        if engine is self.long:
            self._long_last = shape
        return engine

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        engine = self.engine_for_call(inputs)
        self.calls[self.names[engine is self.long]] += 1
        return engine.run(inputs)

    def take_calls(self) -> dict[str, int]:
        """The calls each engine ran since the last take (by `names`), and a fresh count."""
        taken, self.calls = self.calls, dict.fromkeys(self.names, 0)
        return taken

    def describe(self) -> str:
        repeats = ", and shorter calls whose shape repeats" if self.long_on_repeat else ""
        per_text = f" or up to {self.max_short_length} tokens a text" if self.max_short_length else ""
        return (
            f"calls up to {self.max_short_tokens} padded tokens{per_text}: {self.short.describe()}; "
            f"longer{repeats}: {self.long.describe()}"
        )
