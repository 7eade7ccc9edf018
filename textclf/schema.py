"""The one schema of the files that cross a stage boundary: the run manifest and the benchmark reports.

`artifacts/<run>/manifest.json` (train → export → bento/bench/load) and `reports/<run>/{bench,load,results}.json`
(bench/load → report) are declared here, once, as pydantic models. Writers build these models and readers use
their attributes; `textclf schema` writes their JSON Schemas for tools outside Python.

Records are strict (`extra="forbid"`) so a foreign or misspelt file is caught; values that are free-form by nature
(the resolved config, package versions, a build's params, per-class metrics) stay plain dicts. Numbers a stage
may not have measured are `None`. Every top-level file carries `schema_version`; `parse_artifact` turns a wrong
version or a validation error into an `ArtifactError` that names the file and the field.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from textclf.errors import ArtifactError

SCHEMA_VERSION: Final = 1  # of every file below; bump it (and the Literal fields) when a reader would break
# transformers' own names: a multi-label model is trained with BCE-with-logits and served through a sigmoid.
ProblemType = Literal["single_label_classification", "multi_label_classification"]
_MAX_LISTED_ERRORS = 5


class _Record(BaseModel):
    # A key this schema does not know is an error: it is how a foreign or misspelt file shows up.
    model_config = ConfigDict(extra="forbid")


# -- shared pieces ----------------------------------------------------------------------------------------------
class FileEntry(_Record):
    """One recorded file: its content hash and size."""

    sha256: str
    bytes: int


class Machine(BaseModel):
    """The machine a number was measured on (`textclf.hardware.machine_info`); more facts may be added."""

    model_config = ConfigDict(extra="allow")

    cpu_model: str
    arch: str
    cores: int
    isa: dict[str, bool] = Field(description="tracked ISA flags: avx2, avx512_vnni, amx_int8, ...")
    quantization_preset: str
    gpu: str | None = None
    os: str
    python: str


# -- manifest: train section ---------------------------------------------------------------------------------
class SplitRecord(_Record):
    rows: int
    sha256: str


class DataRecord(_Record):
    """Where the labelled data came from, and the data config that rebuilds the same splits."""

    source: dict[str, Any]
    config: dict[str, Any]
    splits: dict[str, SplitRecord]
    dropped_empty_texts: int = 0


class BaseModelRecord(_Record):
    """The checkpoint fine-tuning started from: a built-in or local folder (hashed), or a hub id."""

    kind: Literal["builtin", "local", "hub"]
    name: str | None = None
    id: str | None = None
    path: str | None = None
    sha256: str | None = None
    weights: dict[str, FileEntry] | None = None
    revision: str | None = None


class FolderRecord(_Record):
    """A folder of files with one digest over all of them."""

    path: str
    sha256: str
    files: dict[str, FileEntry]


class SplitMetrics(_Record):
    accuracy: float = Field(ge=0, le=1, description="multi-label: exact match (the whole label set right)")
    macro_f1: float = Field(ge=0, le=1)
    micro_f1: float | None = Field(None, ge=0, le=1, description="multi-label only")
    threshold: float | None = Field(None, description="multi-label: the probability a label is predicted at")
    n: int
    per_class: dict[str, dict[str, Any]]
    confusion_matrix: list[list[int]] | None = Field(
        None, description="single-label: rows = true label, columns = predicted"
    )


class TrainMetrics(_Record):
    validation: SplitMetrics
    test: SplitMetrics


class EpochMetrics(_Record):
    epoch: float
    accuracy: float
    macro_f1: float
    loss: float


class TrainerRecord(_Record):
    best_metric_macro_f1: float | None = None
    best_checkpoint_step: int | None = None
    epochs_run: float
    global_steps: int
    validation_history: list[EpochMetrics]
    resumed_from: str | None = None


class TrainHardware(_Record):
    device: str
    world_size: int
    torch_threads: int


class TrainSection(_Record):
    """What `textclf train` did: data, base model, checkpoint files and metrics."""

    completed_at: str
    wall_time_s: float
    data: DataRecord
    base_model: BaseModelRecord
    label_names: list[str]
    problem_type: ProblemType = "single_label_classification"
    threshold: float | None = Field(None, description="multi-label: saved in the checkpoint's config.json too")
    max_seq_len: int
    checkpoint: FolderRecord
    confusion_matrix_png: str | None = Field(None, description="single-label only")
    metrics: TrainMetrics
    trainer: TrainerRecord
    hardware: TrainHardware


# -- manifest: export section --------------------------------------------------------------------------------
class BatchInvariance(_Record):
    """Label flips (multi-label: label-set changes) between each text alone and inside a padded batch of mixed
    lengths."""

    texts: int
    batch_size: int
    flips: int
    max_prob_change: float


class Verdict(_Record):
    """The gates' results on one build; gates that did not run (a failed build) stay None."""

    passed: bool
    reason: str
    parity_max_abs_diff: float | None = Field(None, description="max |Δ logit| vs PyTorch")
    parity_samples: int | None = None
    test_accuracy: float | None = Field(None, ge=0, le=1)
    test_macro_f1: float | None = Field(None, ge=0, le=1)
    accuracy_delta: float | None = Field(None, description="variant − PyTorch test accuracy (fraction)")
    test_micro_f1: float | None = Field(None, ge=0, le=1, description="multi-label only")
    metric_delta: float | None = Field(None, description="variant − PyTorch on the export's gate_metric (fraction)")
    batch_invariance: BatchInvariance | None = None


class Attempt(Verdict):
    """One candidate setting tried for a variant, and its verdict."""

    params: dict[str, Any] = Field(default_factory=dict)


class VariantRecord(Attempt):
    """One ONNX variant: the verdict of the setting kept (or of the last one tried), its files and timing."""

    files: dict[str, FileEntry] = Field(default_factory=dict, description="empty when refused (no folder)")
    attempts: list[Attempt] = Field(default_factory=list)
    input_key: str = Field(description="sha256 of everything the build depends on; unchanged → export skips it")
    built_at: str
    skipped: bool = False
    latency_ms: float | None = Field(None, description="p50 at batch 1, real test texts (export-time timing)")
    batch32_ms_per_text: float | None = None
    samples_b1: int | None = None
    samples_b32: int | None = None
    bytes: int = 0


class ExportCheckpoint(_Record):
    path: str
    sha256: str
    is_own: bool = Field(description="the run's own checkpoint, not an outside --checkpoint")


class PyTorchReference(_Record):
    test_accuracy: float = Field(ge=0, le=1)
    test_macro_f1: float = Field(ge=0, le=1)
    test_micro_f1: float | None = Field(None, ge=0, le=1, description="multi-label only")


class EvalTextsRecord(_Record):
    path: str
    sha256: str


class ExportSection(_Record):
    """What `textclf export` did: every variant's verdict and the serving variant."""

    checkpoint: ExportCheckpoint
    max_seq_len: int
    label_names: list[str]
    problem_type: ProblemType = "single_label_classification"
    threshold: float | None = Field(None, description="multi-label: labels at or over this probability")
    gate_metric: Literal["accuracy", "micro_f1"] = Field(
        "accuracy", description="what the metric gate compares with PyTorch (micro-F1 at the threshold: multi-label)"
    )
    pytorch: PyTorchReference
    test_texts: int
    eval_texts: EvalTextsRecord
    machine: Machine
    variants: dict[str, VariantRecord]
    serving_variant: str | None = None
    serving_reason: str | None = None
    wall_time_s: float | None = None


class Manifest(_Record):
    """`artifacts/<run>/manifest.json`: one section per stage that has run, under a common header."""

    schema_version: Literal[1]
    run: str
    created_at: str
    updated_at: str | None = None
    git_sha: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict, description="the resolved config of the last stage")
    train: TrainSection | None = None
    export: ExportSection | None = None

    def to_json(self) -> str:
        # A stage that has not run has no key at all (rather than null), as readers of older files expect.
        absent = {name for name in ("train", "export") if getattr(self, name) is None}
        return self.model_dump_json(indent=2, exclude=absent) + "\n"


# -- reports/<run>/bench.json --------------------------------------------------------------------------------
class BenchEngine(_Record):
    """One engine of the sweep: what it is, its size and accuracy, or why it was left out."""

    label: str
    kind: Literal["pytorch", "onnxruntime"]
    variant: str | None = None
    bytes: int
    test_accuracy: float | None = None
    accuracy_delta: float | None = None
    loaded: bool
    rss_load_mb: float | None = None
    reason: str | None = None
    threads: int | None = None  # intra-op threads (ORT) or torch threads it ran with; None in older reports


class BenchRow(_Record):
    """One engine on one case: synthetic (`b8-s128`, seq_len set) or real texts (`real-b32`, seq_len None)."""

    engine: str
    case: str
    mode: Literal["session", "serving"]
    batch: int
    seq_len: int | None
    mean_words: float | None = None
    iters: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    seq_per_s: float


class GemmRate(_Record):
    size: int
    threads: int
    median_s: float
    flops_per_s: float


class RooflineCase(_Record):
    batch: int
    seq_len: int


class Roofline(_Record):
    gemm: GemmRate
    case: RooflineCase
    model_flops: float


class OpProfile(_Record):
    """ONNX Runtime's profiler on one variant at the roofline case: node time split by operator type."""

    runs: int
    ms_per_run: float = Field(description="the profiled session's own time per run (profiling adds a little)")
    node_ms_per_run: float
    share: dict[str, float] = Field(description="op type -> fraction of node time, largest first")


class BenchReport(_Record):
    """`reports/<run>/bench.json` (and `bench-cuda.json`): the engine sweep."""

    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    run: str
    device: str
    machine: Machine
    versions: dict[str, str]
    config: dict[str, Any]
    ran: bool
    reason: str | None = None
    engines: dict[str, BenchEngine] = Field(default_factory=dict)
    rows: list[BenchRow] = Field(default_factory=list)
    roofline: Roofline | None = None
    op_profiles: dict[str, OpProfile] = Field(
        default_factory=dict, description="engine label -> its op-type split at the roofline case (CPU runs)"
    )
    real_texts: int | None = None
    wall_time_s: float | None = None


# -- reports/<run>/load.json ---------------------------------------------------------------------------------
class LoadPhase(_Record):
    """One locust phase against one server (closed loop, `users` concurrent users)."""

    users: int
    seconds: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s_per_request: float | None = Field(None, description="server CPU seconds per request")
    engine_busy: float | None = Field(None, description="fraction of the phase the engine was running")


class ServerRecord(_Record):
    """One server under load; `results` is keyed by phase: "1", "8", "32", "1-after-32", ..."""

    what: str
    results: dict[str, LoadPhase] = Field(default_factory=dict)
    ran: bool
    reason: str | None = None
    settings: dict[str, Any] | None = None


class LoadReport(_Record):
    """`reports/<run>/load.json`: HTTP load on each server."""

    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    run: str
    machine: Machine
    versions: dict[str, str]
    pinning: str
    request: str
    servers: dict[str, ServerRecord]
    wall_time_s: float | None = None


# -- reports/<run>/results.json ------------------------------------------------------------------------------
class Target(_Record):
    target: float
    value: float | None
    met: bool
    at_most: bool = Field(False, description="the value must stay at or under the target (else reach it)")


class Headline(_Record):
    """The figures a newcomer reads first, all ratios of this run's own measurements (None: not measured)."""

    speedup_b1_real: float | None = None
    speedup_b32_s128: float | None = None
    gemm_fraction_b32_s128: float | None = None
    http_rps_ratio_32_users: float | None = None
    best_variant: str | None = None
    accuracy_delta: float | None = None
    best_engine: str | None = None
    speedup_b32_real: float | None = None
    speedup_b32_real_sorted: float | None = Field(None, description="batches of 32 texts sorted by token length")
    achieved_gflops_b32_s128: float | None = None
    gemm_gflops: float | None = None
    test_accuracy: float | None = None
    size_mb: float | None = None
    pytorch_size_mb: float | None = None
    http_rps_32_users: float | None = None
    http_p99_ms_32_users: float | None = None
    http_errors_32_users: int | None = None
    baseline_rps_32_users: float | None = None
    baseline_p99_ms_32_users: float | None = None
    http_rps_ratio_vs_peer_32_users: float | None = None
    http_p99_ratio_vs_peer_32_users: float | None = None
    after_burst_p50_ratio: float | None = None
    engine_busy_32_users: float | None = None
    http_errors_max: int | None = None
    targets: dict[str, Target] = Field(default_factory=dict)
    engine_target_row: str | None = Field(None, description="which ISA row of the engine targets applies")


class NotRun(_Record):
    ran: Literal[False]
    reason: str


class Results(_Record):
    """`reports/<run>/results.json`: the headline, and every number behind it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    run: str
    headline: Headline
    machine: Machine
    versions: dict[str, str]
    engines: dict[str, BenchEngine]
    speedups: dict[str, dict[str, float]] = Field(description="engine → case → p50 speed-up over PyTorch fp32")
    roofline: Roofline
    rows: list[BenchRow]
    op_profiles: dict[str, OpProfile] = Field(default_factory=dict)
    http: LoadReport | None = None
    gpu: BenchReport | NotRun
    plots: list[str]


# -- reading ---------------------------------------------------------------------------------------------------
ArtifactT = TypeVar("ArtifactT", bound=BaseModel)

# The file name each schema is written under by `textclf schema`.
SCHEMAS: Final[dict[str, type[BaseModel]]] = {
    "manifest.schema.json": Manifest,
    "bench.schema.json": BenchReport,
    "load.schema.json": LoadReport,
    "results.schema.json": Results,
}


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:_MAX_LISTED_ERRORS]:
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg'].lower()}")
    if exc.error_count() > _MAX_LISTED_ERRORS:
        parts.append(f"and {exc.error_count() - _MAX_LISTED_ERRORS} more")
    return "; ".join(parts)


def parse_artifact(text: str, model: type[ArtifactT], source: str) -> ArtifactT:
    """Validate one file's text against its model.

    Args:
        text: the file's content.
        model: `Manifest`, `BenchReport`, `LoadReport` or `Results`.
        source: how to name the file in an error (its path).

    Raises:
        ArtifactError: not JSON, another schema_version, or a field missing, mistyped or unknown; the message
            names the file, its schema_version and the field.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{source}: schema_version {version!r}, this textclf reads {SCHEMA_VERSION} "
            "(written by another textclf version; run that stage again)"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        label = f"schema_version {version}" if version is not None else "no schema_version"
        raise ArtifactError(f"{source} ({label}): {_describe(exc)}") from None


def json_schemas() -> dict[str, dict[str, Any]]:
    """`{file name: JSON Schema}` of every file declared here (draft 2020-12, as pydantic writes it)."""
    schemas = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schemas[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return schemas
