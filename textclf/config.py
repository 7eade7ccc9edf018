"""One typed, validated configuration object for every stage.

`configs/default.yaml` holds every default; `--set section.key=value` overrides it on the command line and
`TEXTCLF_*` environment variables override the `serve` section. Unknown keys and wrong types are errors that
name the key.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from textclf.artifacts.records import describe_validation_error
from textclf.errors import ConfigError
from textclf.inference.text_options import OverlengthPolicy
from textclf.inference.variants import DEFAULT_VARIANTS, variant_spec
from textclf.inference.windows import AggregationSetting
from textclf.paths import DEFAULT_CONFIG

logger = logging.getLogger(__name__)


class Section(BaseModel):
    # Unknown keys are errors, and values are checked again when a field is assigned after loading.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where the labelled texts come from and how they are split."""

    path: str = Field(
        "builtin:rotten_tomatoes",
        description="builtin:rotten_tomatoes, a .csv/.jsonl/.parquet file or a folder of train/validation/test "
        "files, or hf:<dataset id>",
    )
    text_column: str = "text"
    label_column: str = "label"
    hf_config: str | None = Field(None, description="configuration name of a hub dataset")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 42
    on_empty_text: Literal["drop", "fail"] = "drop"
    max_classes: int = Field(50, ge=2)
    max_rows: int | None = Field(None, ge=10, description="use a stratified sample of this many rows")
    multi_label: bool = Field(
        False, description="each text has a set of labels (a JSON list, or label_separator-joined text); sigmoid"
    )
    label_separator: str = Field(
        ",", min_length=1, description="multi-label: splits a text label column (CSV/TSV) into the text's labels"
    )


# Experiment trackers `train.report_to` may name: the Hugging Face Trainer's names for them.
Tracker = Literal["tensorboard", "mlflow", "wandb"]
TRACKERS: tuple[Tracker, ...] = ("tensorboard", "mlflow", "wandb")


class TrainConfig(Section):
    """Fine-tuning with the Hugging Face Trainer."""

    base_model: str = Field("builtin:minilm", description="builtin:minilm, a local folder, or a hub id")
    max_seq_len: int = Field(128, ge=8, le=8192)
    epochs: float = Field(2, gt=0)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    seed: int = 42
    early_stopping_patience: int = Field(2, ge=1)
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; default: all cores")
    logging_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    group_by_length: bool = Field(True, description="batch texts of similar length together (less padding)")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="multi-label: a label is predicted at or over this probability (saved with model)"
    )
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="experiment trackers of the Trainer, export and report: none, tensorboard, mlflow, wandb, or a "
        "list (docs/tracking.md)",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> list[str]:
        # `none` (the Trainer's own word), one name, `a,b` or a YAML list; every name checked here so a typo lists
        # the valid ones instead of pydantic's one-literal-at-a-time message.
        if value is None:
            return []
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ValueError(f"expected a tracker name or a list of them, one of: none, {', '.join(TRACKERS)}")
        chosen = [name.strip().lower() for name in names if name.strip().lower() not in ("", "none")]
        unknown = [name for name in chosen if name not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown tracker(s) {unknown}; valid: none, {', '.join(TRACKERS)}")
        return list(dict.fromkeys(chosen))


class ExportConfig(Section):
    """ONNX variants and the gates each must pass."""

    variants: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VARIANTS),
        description="names from the registry in textclf.inference.variants (default: those that served on some CPU "
        "measured, and the fp32 reference)",
    )
    optimization_level: int = Field(2, ge=1, le=4, description="ORT graph optimization level O1..O4")
    max_fp32_parity: float = Field(1e-4, gt=0)
    max_optimized_parity: float = Field(1e-3, gt=0)
    max_accuracy_drop: float = Field(
        0.005, ge=0, le=1, description="largest drop of the gated metric: accuracy, or micro-F1 for multi-label"
    )
    max_invariance_flips: int = Field(0, ge=0, description="labels allowed to change between alone and batched")
    parity_samples: int = Field(128, ge=1)
    invariance_samples: int | None = Field(None, ge=1, description="test texts checked; default: all")
    calibration_samples: int = Field(256, ge=1)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "entropy"
    timing_seconds: float = Field(
        3.0,
        gt=0,
        description="time per passing CPU variant in the interleaved timing on real texts that gives its serving cost "
        "(the serving choice, the must-beat-fp32 gate); each long-text repeat gets a third of it",
    )
    serving_variant: str | None = Field(None, description="pin the served variant")
    route_long_calls: bool = Field(
        True,
        description="a second variant may take long texts where it wins them by 10 % in a repeated timing; false: "
        "one variant serves every text",
    )
    fit_confidence: bool = Field(True, description="fit each passing variant's temperature on the validation split")
    multi_label_thresholds: Literal["fixed", "per_label"] = Field("fixed", description="or F1-best per label")

    @field_validator("variants")
    @classmethod
    def _variants_known_unique_and_nonempty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one variant is needed")
        if len(set(value)) != len(value):
            raise ValueError(f"variants repeat: {value}")
        for name in value:
            variant_spec(name)
        return value

    @field_validator("serving_variant")
    @classmethod
    def _serving_variant_known(cls, value: str | None) -> str | None:
        if value is not None:
            variant_spec(value)
        return value


class ServeConfig(Section):
    """The BentoML service; every key can also be set with TEXTCLF_<KEY> in the environment."""

    model_name: str = "textclf"
    variant: str | None = Field(
        None,
        description="serve this variant alone instead of export's choice: any passing variant the run or Bento ships "
        "(`textclf build --variants`); TEXTCLF_SERVE_VARIANT",
    )
    workers: int = Field(2, ge=1, description="worker processes, each with its own engine and batcher")
    intra_op_threads: int | None = Field(None, ge=1, description="default: cores divided by workers")
    inter_op_threads: int = Field(1, ge=1)
    ort_spinning: bool = Field(
        False, description="let ORT's pool threads spin between ops (faster alone, slower beside the HTTP loop)"
    )
    use_cuda: bool = False
    max_batch_texts: int = Field(4, ge=1, description="texts per engine call, grouped by length (less padding)")
    max_batch_tokens: int = Field(
        2048, ge=1, description="padded tokens (texts × longest) per engine call; a longer single text runs alone"
    )
    max_queued_texts: int = Field(2048, ge=1, description="texts waiting for the engine before 503 + Retry-After")
    lookahead_texts: int = Field(
        8, ge=1, description="how far past the oldest waiting text a call reaches for similar lengths (tail bound)"
    )
    max_texts_per_request: int = Field(64, ge=1)
    max_chars_per_text: int = Field(20000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1)
    on_overlength: OverlengthPolicy = Field(
        "truncate", description="texts over max_seq_len tokens: truncate (flagged), error (422), or chunk (windows)"
    )
    chunk_overlap_tokens: int = Field(
        32, ge=0, description="chunk: tokens a window repeats from the one before (at most half a window's text)"
    )
    chunk_aggregation: AggregationSetting = Field(
        "auto", description="chunk: windows' logits to a text's: mean, max (per label), auto (mean; multi-label: max)"
    )
    max_chunks_per_text: int = Field(64, ge=1, description="chunk: windows one text may need before 413")
    max_chunks_per_request: int = Field(
        256,
        ge=1,
        description="chunk: windows one request may need before 413 (a smaller max_queued_texts bounds it too)",
    )
    max_concurrency: int = Field(256, ge=1, description="requests held before 503 + Retry-After")
    access_log: bool = Field(False, description="BentoML's access log line per request, beside the guard's own")
    timeout_s: float = Field(60.0, gt=0, description="a prediction not answered by then gets 504 in the error shape")
    api_keys: SecretStr | None = Field(
        None, description="comma-separated API keys or a file of keys, one per line; none: the API is open"
    )
    metrics_public: bool = Field(True, description="/metrics without a key when api_keys are set")
    min_confidence: float | None = Field(None, gt=0, le=1, description="abstain under this top probability")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="or where validation reaches this")
    monitor_window: int = Field(
        1000,
        ge=100,
        le=100_000,
        description="drift: answered texts per worker compared with export's reference; export computes the tests' "
        "critical values for this size, so a served window must equal the exported one (export again to change it)",
    )
    monitor_texts: bool = Field(
        False, description="BentoML's data collection logs each answered text itself, not only its features"
    )
    max_explain_words: int = Field(64, ge=1, le=1024, description="explain: a text's first N words are explained")
    max_explain_texts: int = Field(8, ge=1, description="explain: texts one explained request may hold before 413")

    @field_validator("variant")
    @classmethod
    def _variant_known(cls, value: str | None) -> str | None:
        if value is not None:
            variant_spec(value)
        return value

    @model_validator(mode="after")
    def _a_full_request_fits_the_queue(self) -> ServeConfig:
        if self.max_texts_per_request > self.max_queued_texts:
            raise ValueError(
                f"max_texts_per_request={self.max_texts_per_request} is over max_queued_texts={self.max_queued_texts}:"
                " such a request could never be queued"
            )
        return self

    @model_validator(mode="after")
    def _one_selective_setting(self) -> ServeConfig:
        if self.min_confidence is not None and self.target_accuracy is not None:
            raise ValueError("min_confidence and target_accuracy are both set; set at most one")
        return self


class Config(BaseModel):
    """The whole configuration: one section per stage plus the run's name and folders."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    run: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    artifacts_root: Path = Path("artifacts")
    reports_root: Path = Path("reports")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    # The benchmarks' section is theirs to type (`textclf_benchmarks.config.BenchmarkConfig`): the core the Bento
    # ships knows nothing of load servers or sweeps, and passes the section through as it was written.
    bench: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pinned_variant_is_built(self) -> Config:
        pinned = self.export.serving_variant
        if pinned is not None and pinned not in self.export.variants:
            raise ValueError(f"export.serving_variant={pinned} is not in export.variants {self.export.variants}")
        return self

    @property
    def run_dir(self) -> Path:
        return self.artifacts_root / self.run

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form, as recorded in the manifest."""
        return self.model_dump(mode="json")


ConfigT = TypeVar("ConfigT", bound=Config)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    dotted, raw = item.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {item!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}: cannot parse value {raw!r}: {exc}") from exc
    if value == "" and raw.strip():
        value = raw.strip()  # "|" or ">" alone start a YAML block, not a value: --set data.label_separator=|
    return keys, value


def _apply_override(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node: Any = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} is not a section")
        node = child
    node[keys[-1]] = value


# Keys an earlier textclf read, each with what replaces it: a config that still sets one is told why, not only that
# the key is unknown.
REMOVED_KEYS: dict[tuple[str, str], str] = {
    ("export", "shape_timing_seconds"): "export no longer times call shapes or routing plans; the serving variant "
    "comes from one interleaved timing on real texts, within export.timing_seconds per variant",
}


def _refuse_removed_keys(raw: dict[str, Any]) -> None:
    """A ConfigError naming every removed key `raw` still sets and what replaces it."""
    found = [
        f"{section}.{key} was removed: {instead}; delete the key"
        for (section, key), instead in REMOVED_KEYS.items()
        if isinstance(raw.get(section), dict) and key in raw[section]
    ]
    if found:
        raise ConfigError(f"invalid config: {'; '.join(found)}")


# Serve keys whose environment name says more than TEXTCLF_<KEY> would (TEXTCLF_VARIANT could be export's list).
_ENV_NAMES = {"variant": "TEXTCLF_SERVE_VARIANT"}


def _env_overrides(environ: dict[str, str]) -> list[str]:
    """TEXTCLF_<KEY>=value for every key of the serve section (`_ENV_NAMES` where it names one), plus TEXTCLF_RUN."""
    overrides = []
    for key in ServeConfig.model_fields:
        env_name = _ENV_NAMES.get(key, f"TEXTCLF_{key.upper()}")
        if env_name in environ:
            overrides.append(f"serve.{key}={environ[env_name]}")
    if "TEXTCLF_RUN" in environ:
        overrides.append(f"run={environ['TEXTCLF_RUN']}")
    return overrides


@overload
def load_config(
    path: Path | str | None = None, overrides: list[str] | None = None, *, environ: dict[str, str] | None = None
) -> Config: ...


@overload
def load_config(
    path: Path | str | None = None,
    overrides: list[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    model: type[ConfigT],
) -> ConfigT: ...


def load_config(
    path: Path | str | None = None,
    overrides: list[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    model: type[Config] = Config,
) -> Config:
    """Read the YAML file, apply environment then ``--set`` overrides, and validate.

    Args:
        path: YAML file; defaults to ``configs/default.yaml`` of this checkout (built-in defaults if absent).
        overrides: ``section.key=value`` strings; values are parsed as YAML scalars or lists.
        environ: environment to read ``TEXTCLF_*`` from; defaults to ``os.environ``.
        model: the config class to validate into; a stage that owns a section types it in a subclass of `Config`.

    Raises:
        ConfigError: the file is missing or malformed, or a key is unknown, removed (`REMOVED_KEYS`: the message
            says what replaces it) or has a wrong type.
    """
    config_path = Path(path) if path is not None else DEFAULT_CONFIG
    raw: dict[str, Any] = {}
    if config_path.exists():
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: expected a mapping of sections at the top level")
        raw = loaded or {}
    elif path is not None:
        raise ConfigError(f"config file not found: {config_path}")

    env = os.environ if environ is None else environ
    for item in [*_env_overrides(dict(env)), *(overrides or [])]:
        keys, value = _parse_override(item)
        _apply_override(raw, keys, value)
    _refuse_removed_keys(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {describe_validation_error(exc, show_input=True)}") from exc
