"""The run manifest's schema: `artifacts/<run>/manifest.json` (train → export → bento / bench / load), declared
once as pydantic models. Writers build these models and readers use their attributes; `textclf schema` writes their
JSON Schema for tools outside Python. The shared pieces (record base, file entries, machine) are in
`textclf.artifacts.records`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from textclf.artifacts.records import FileEntry, Machine, Record

# transformers' own names: a multi-label model is trained with BCE-with-logits and served through a sigmoid.
ProblemType = Literal["single_label_classification", "multi_label_classification"]


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
    latency_ms: float | None = Field(None, description="p50 at batch 1, real test texts (export-time timing)")
    batch32_ms_per_text: float | None = None
    samples_b1: int | None = None
    samples_b32: int | None = None
    bytes: int = 0

    def serving_cost(self) -> float | None:
        """Geometric mean of single-text latency and per-text time in a batch of 32 (a server sees both); None when
        export did not time it."""
        if self.latency_ms is None or self.batch32_ms_per_text is None:
            return None
        return float((self.latency_ms * self.batch32_ms_per_text) ** 0.5)


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


class ShapeTiming(Record):
    """One call shape every passing CPU variant was timed at (engine alone), as part of one case: a synthetic
    shape (token ids of real text cut to `seq_len`), or the calls of real test texts that had this shape."""

    case: str | None = Field(
        None,
        description="b<batch>-s<seq_len> (a synthetic shape), real-b1 (test texts one at a time) or real-b32-sorted "
        "(batches of 32 sorted by length); none: a synthetic shape, from an export before real-text cases",
    )
    batch: int
    seq_len: int
    calls: int | None = Field(
        None, ge=1, description="the case's timed calls of this shape, its weight in the case's mean (none: one)"
    )
    ms: dict[str, float] = Field(
        description="per call, by variant: the lowest over interleaved rounds of the round's median (older exports: "
        "p50 over one shape's repeats)"
    )
    repeat_ms: dict[str, float] | None = Field(
        None,
        description="synthetic shapes: per call, by variant, when the call repeats the shape of the call before it "
        "(the median of a run of repeats, the lowest over rounds); none: not timed so (real-text cases, older exports)",
    )


def route_goes_long(rows: int, length: int, max_short_tokens: int, max_short_length: int = 0) -> bool:
    """The long-call rule of a route: over `max_short_tokens` padded tokens and over `max_short_length` tokens a text.

    Two conditions, not one: where the engines cross over depends mostly on the texts' padded length (OpenVINO's
    int8 wins from ~32 tokens a text at any batch, ONNX Runtime's below it), so a token count alone sent b32 × 16
    calls to OpenVINO at 37.7 ms against 23.9 on int8-qdq-mha (reports/zen4, 2026-12-03 sweep).
    """
    return rows * length > max_short_tokens and length > max_short_length


class ServingRoute(Record):
    """Calls over `max_short_tokens` padded tokens (texts × longest) whose texts are padded past `max_short_length`
    tokens run on `variant` instead of the serving one (`goes_long`)."""

    variant: str
    max_short_tokens: int
    max_short_length: int = Field(
        0,
        ge=0,
        description="calls padded to at most this many tokens per text stay on the serving variant, however many "
        "texts (0: no such rule, as in exports before it)",
    )
    envelope_min: float = Field(description="over the timed cases: min(best variant's time ÷ the routed time)")
    envelope_min_unrouted: float = Field(description="the same for the serving variant alone")
    long_on_repeat: bool = Field(
        False,
        description="short calls whose shape repeats run on `variant` too (where it was its last shape, or the last "
        "two calls had it): export measured `variant` faster than the serving one on every short shape repeated",
    )

    def goes_long(self, rows: int, length: int) -> bool:
        """Whether a call of `rows` texts padded to `length` tokens runs on `variant` (its shape aside)."""
        return route_goes_long(rows, length, self.max_short_tokens, self.max_short_length)

    def describe(self) -> str:
        """`calls over N padded tokens[ and M tokens a text] on VARIANT`, for logs and reports."""
        per_text = f" and {self.max_short_length} tokens a text" if self.max_short_length else ""
        return f"calls over {self.max_short_tokens} padded tokens{per_text} on {self.variant}"


class PlanTiming(Record):
    """One plan (serving variant, optional long-call route) export timed as the service would run it."""

    label: str = Field(description="the serving variant, or `serving+route>threshold` (`/repeat`: long_on_repeat)")
    serving: str
    route: ServingRoute | None = None
    modeled_envelope: float = Field(description="its worst case predicted from the variants' own timings")
    measured_envelope: float = Field(
        description="its worst case timed as served: min over cases of (fastest variant alone ÷ the plan's time)"
    )


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
    eval_texts: EvalTextsRecord
    machine: Machine
    variants: dict[str, VariantRecord]
    serving_variant: str | None = None
    serving_reason: str | None = None
    shape_timings: list[ShapeTiming] = Field(default_factory=list)
    serving_route: ServingRoute | None = Field(
        None, description="long calls on another variant, where export's shape timings found one faster there"
    )
    plans: list[PlanTiming] = Field(
        default_factory=list, description="the leading plans, timed as served (the chosen one is the serving plan)"
    )
    plan_timings: list[ShapeTiming] = Field(
        default_factory=list, description="that timing, per call: ms by variant alone and by plan label"
    )
    wall_time_s: float | None = None

    def served_variants(self) -> list[str]:
        """What a served model runs: the serving variant, then the long-call route's variant where there is one."""
        route = [self.serving_route.variant] if self.serving_route else []
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
