"""The run manifest's schema: `artifacts/<run>/manifest.json` (train → export → bento / bench / load), declared
once as pydantic models. Writers build these models and readers use their attributes; `textclf schema` writes their
JSON Schema for tools outside Python. The shared pieces (record base, file entries, machine) are in
`textclf.artifacts.records`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidatorFunctionWrapHandler, model_validator

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.artifacts.drift_reference import DriftReferenceRecord
from textclf.artifacts.records import FileEntry, Machine, Record

# transformers' own names: a multi-label model is trained with BCE-with-logits and served through a sigmoid.
ProblemType = Literal["single_label_classification", "multi_label_classification"]
# Keys of the export section written before one engine per machine (shape timings, plans, and a route with a repeat
# rule and a length rule), and of its variants' older timing: read and dropped, so such a run still loads; it serves
# its serving variant alone (`ExportSection.ignored_route` names the route's variant, for the log).
_OLDER_EXPORT_KEYS = ("serving_route", "shape_timings", "plans", "plan_timings")
_OLDER_VARIANT_KEYS = ("samples_b1", "samples_b32")


# -- manifest: train section ---------------------------------------------------------------------------------
class SplitRecord(Record):
    rows: int
    sha256: str


class DataRecord(Record):
    """Where the labelled data came from, and the data config that rebuilds the same splits."""

    source: dict[str, Any]
    config: dict[str, Any]
    splits: dict[str, SplitRecord]
    dropped_empty_texts: int = 0


class BaseModelRecord(Record):
    """The checkpoint fine-tuning started from: a built-in or local folder (hashed), or a hub id."""

    kind: Literal["builtin", "local", "hub"]
    name: str | None = None
    id: str | None = None
    path: str | None = None
    sha256: str | None = None
    weights: dict[str, FileEntry] | None = None
    revision: str | None = None


class FolderRecord(Record):
    """A folder of files with one digest over all of them."""

    path: str
    sha256: str
    files: dict[str, FileEntry]


class SplitMetrics(Record):
    accuracy: float = Field(ge=0, le=1, description="multi-label: exact match (the whole label set right)")
    macro_f1: float = Field(ge=0, le=1)
    micro_f1: float | None = Field(None, ge=0, le=1, description="multi-label only")
    threshold: float | None = Field(None, description="multi-label: the probability a label is predicted at")
    n: int
    per_class: dict[str, dict[str, Any]]
    confusion_matrix: list[list[int]] | None = Field(
        None, description="single-label: rows = true label, columns = predicted"
    )


class TrainMetrics(Record):
    validation: SplitMetrics
    test: SplitMetrics


class EpochMetrics(Record):
    epoch: float
    accuracy: float
    macro_f1: float
    loss: float


class TrainerRecord(Record):
    best_metric_macro_f1: float | None = None
    best_checkpoint_step: int | None = None
    epochs_run: float
    global_steps: int
    validation_history: list[EpochMetrics]
    resumed_from: str | None = None


class TrainHardware(Record):
    device: str
    world_size: int
    torch_threads: int


class TrackedRun(Record):
    """One experiment tracker's run that `textclf train` started; `export` and `report` log to the same run."""

    run_id: str
    location: str | None = Field(
        None,
        description="mlflow: the tracking URI (none: the run's own tracking/mlflow.db); tensorboard: the event "
        "folder, relative to the run's folder; wandb: entity/project",
    )


class TrackingSection(Record):
    """The tracked runs of one training, by tracker (`train.report_to`); a tracker turned off has none."""

    mlflow: TrackedRun | None = None
    tensorboard: TrackedRun | None = None
    wandb: TrackedRun | None = None


class TrainSection(Record):
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
    tracking: TrackingSection | None = Field(
        None, description="the experiment trackers' runs (`tracking.<tracker>.run_id`); none: train.report_to=none"
    )


# -- manifest: export section --------------------------------------------------------------------------------
class BatchInvariance(Record):
    """Label flips (multi-label: label-set changes) between each text alone and inside a padded batch of mixed
    lengths."""

    texts: int
    batch_size: int
    flips: int
    max_prob_change: float


class Verdict(Record):
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
    latency_ms: float | None = Field(
        None, description="ms per real single text (b1): export's interleaved timing, median over rounds"
    )
    batch32_ms_per_text: float | None = Field(None, description="ms per text in sorted batches of 32 real texts")
    long_ms_per_text: float | None = Field(
        None, description="ms per real long text (a full max_seq_len window, alone); none: an older export"
    )
    bytes: int = 0
    confidence: ConfidenceRecord | None = Field(
        None,
        description="fitted on this variant's own validation logits (export.fit_confidence) and applied wherever it "
        "serves; none: not fitted (fit_confidence off, a refused variant, an older export)",
    )
    drift_reference: DriftReferenceRecord | None = Field(
        None,
        description="its answers on the test split and the drift tests' critical values (`reference.npz` in its "
        "folder, listed in its files): what a served window is compared with; none: a refused or GPU variant, or an "
        "older export (the service then serves without drift monitoring)",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_older_timing(cls, data: Any) -> Any:
        # Sample counts of the timing before the interleaved one: nothing reads them now.
        if isinstance(data, dict) and any(key in data for key in _OLDER_VARIANT_KEYS):
            data = {key: value for key, value in data.items() if key not in _OLDER_VARIANT_KEYS}
        return data

    def serving_cost(self) -> float | None:
        """The geometric mean of the per-text times export measured: single texts, sorted batches of 32 and long
        texts (an older export: the first two), so no one case decides; None when export did not time it."""
        if self.latency_ms is None or self.batch32_ms_per_text is None:
            return None
        times = [self.latency_ms, self.batch32_ms_per_text]
        if self.long_ms_per_text is not None:
            times.append(self.long_ms_per_text)
        return float(math.prod(times) ** (1 / len(times)))


class ExportCheckpoint(Record):
    path: str
    sha256: str
    is_own: bool = Field(description="the run's own checkpoint, not an outside --checkpoint")


class PyTorchReference(Record):
    test_accuracy: float = Field(ge=0, le=1)
    test_macro_f1: float = Field(ge=0, le=1)
    test_micro_f1: float | None = Field(None, ge=0, le=1, description="multi-label only")


class EvalTextsRecord(Record):
    path: str
    sha256: str


class LongRoute(Record):
    """The one second variant: a call whose texts are padded past `max_short_tokens_per_text` tokens runs on
    `variant` instead of the serving one. Export keeps it only where `variant` won the real long-text case by 10 %
    or more in a repeated, order-alternating timing (`textclf_export.selection`)."""

    variant: str
    max_short_tokens_per_text: int = Field(
        ge=1, description="calls padded to at most this many tokens a text stay on the serving variant"
    )

    def goes_long(self, tokens_per_text: int) -> bool:
        """Whether a call padded to `tokens_per_text` tokens a text runs on `variant`."""
        return tokens_per_text > self.max_short_tokens_per_text

    def describe(self) -> str:
        """`calls over N tokens a text on VARIANT`, for logs and reports."""
        return f"calls over {self.max_short_tokens_per_text} tokens a text on {self.variant}"


class ExportSection(Record):
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
    validation_texts: int | None = Field(
        None, description="the validation split the confidence is fitted on (never the test split); none: older"
    )
    eval_texts: EvalTextsRecord
    machine: Machine
    variants: dict[str, VariantRecord]
    serving_variant: str | None = None
    serving_reason: str | None = None
    long_route: LongRoute | None = Field(
        None, description="long texts on a second variant, where it won export's repeated long-text timing by ≥ 10 %"
    )
    serving_timing: dict[str, Any] = Field(
        default_factory=dict,
        description="what the choice was made on (written by textclf_export.selection): per case and variant ms, the "
        "A/A spread, the long-text repeats",
    )
    wall_time_s: float | None = None
    _ignored_route: str | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _drop_older_route(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> ExportSection:
        ignored = None
        if isinstance(data, dict) and any(key in data for key in _OLDER_EXPORT_KEYS):
            route = data.get("serving_route")
            ignored = route.get("variant") if isinstance(route, dict) else None
            data = {key: value for key, value in data.items() if key not in _OLDER_EXPORT_KEYS}
        section: ExportSection = handler(data)
        if ignored is not None:  # an instance passed in again keeps what its first validation found
            section._ignored_route = ignored
        return section

    @property
    def ignored_route(self) -> str | None:
        """The variant of a long-call route an older textclf exported (ignored now: re-export to route), or None."""
        return self._ignored_route

    def served_variants(self) -> list[str]:
        """What a served model runs: the serving variant, then the long route's variant where there is one."""
        route = [self.long_route.variant] if self.long_route else []
        return [self.serving_variant, *route] if self.serving_variant else []


class Manifest(Record):
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
