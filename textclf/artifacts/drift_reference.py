"""The drift reference: what a variant answered on the test split, per text, kept so a served window of answers can be
compared with it (`textclf.serving.drift`), plus the drift tests' critical values export computed for one window size.

The file is `reference.npz`, numpy only (read with `allow_pickle=False`, so loading it runs no code): the arrays
below, one row per test text, and the tests' window, level and critical values. Logits are kept rather than scores so
the service recomputes confidence with the variant's own calibration. `DriftReferenceRecord` is its manifest summary.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
from pydantic import Field

from textclf.artifacts.files import atomic_write_bytes, sha256_file
from textclf.artifacts.records import Record
from textclf.errors import ArtifactError

logger = logging.getLogger(__name__)

REFERENCE_NAME: Final = "reference.npz"
FORMAT_VERSION: Final = 1  # of the npz layout; a reader refuses another
# The drift signals, in report order: the answered label mix (Pearson χ²) and three per-text quantities compared by
# the two-sample Kolmogorov–Smirnov test.
SIGNALS: Final = ("label_mix", "confidence", "input_tokens", "tokens_per_word")
# Per-text arrays: name → (dtype they are stored as, dimensions).
_ROWS: Final = {
    "logits": (np.float32, 2),
    "labels": (np.int64, 1),
    "input_tokens": (np.int64, 1),
    "words": (np.int64, 1),
    "truncated": (np.bool_, 1),
}
_META: Final = ("format_version", "window", "level", "signals", "critical_values")


@dataclass(frozen=True)
class ReferenceData:
    """A variant's answers on the test split and the drift tests' critical values.

    Attributes:
        logits: (texts, labels) raw logits.
        labels: the answered label id per text: the argmax of its logits (a multi-label model's top label).
        input_tokens: tokens the model read per text (after truncation, special tokens included): the count the
            service observes for each answered text.
        words: whitespace-separated words per text (`textclf.serving.drift.count_words`).
        truncated: whether the text was cut at max_seq_len.
        window: the served window size (texts) the critical values hold for.
        level: the family-wise false-alarm level over all signals (0.05: 5 %).
        critical_values: per signal in `SIGNALS`, the statistic above which it counts as drift.
    """

    logits: np.ndarray
    labels: np.ndarray
    input_tokens: np.ndarray
    words: np.ndarray
    truncated: np.ndarray
    window: int
    level: float
    critical_values: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, (dtype, ndim) in _ROWS.items():
            value = np.asarray(getattr(self, name))
            if value.ndim != ndim:
                raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {value.shape}")
            if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise ValueError(f"{name}: expected {np.dtype(dtype).name} values, got {value.dtype.name}")
            object.__setattr__(self, name, value.astype(dtype, copy=False))
        texts, labels = self.logits.shape
        if texts < 1 or labels < 2:
            raise ValueError(f"logits: need at least one text and two labels, got shape {self.logits.shape}")
        for name in ("labels", "input_tokens", "words", "truncated"):
            if len(getattr(self, name)) != texts:
                raise ValueError(f"{name}: {len(getattr(self, name))} rows, but logits has {texts}")
        if not np.all(np.isfinite(self.logits)):
            raise ValueError("logits: not all finite")
        if np.any(self.labels != self.logits.argmax(axis=1)):
            raise ValueError("labels: not the argmax of the logits (the answered label)")
        if self.input_tokens.min() < 1 or self.words.min() < 0:
            raise ValueError("input_tokens must be ≥ 1 and words ≥ 0 per text")
        if self.window < 1 or not 0.0 < self.level < 1.0:
            raise ValueError(f"window must be ≥ 1 and level in (0, 1), got {self.window} and {self.level}")
        if set(self.critical_values) != set(SIGNALS):
            raise ValueError(f"critical_values: expected the signals {list(SIGNALS)}, got {list(self.critical_values)}")
        bad = {k: v for k, v in self.critical_values.items() if not (np.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"critical_values: must be positive and finite, got {bad}")

    @property
    def texts(self) -> int:
        """The reference size (test texts)."""
        return int(self.logits.shape[0])

    @property
    def num_labels(self) -> int:
        return int(self.logits.shape[1])


class FalseAlarmCheck(Record):
    """Export's offline false-alarm check of the drift tests on this variant's own answers
    (`textclf_export.drift_reference.false_alarm_check`): in each trial a reference and a window are drawn from the
    pooled validation and test answers and the service's tests (`textclf.serving.drift.evaluate`) compare them at the
    critical values for those sizes. No drift by construction, so every alarm is a false one. Drawn independently
    (the issue's check) the two share many answers, which lowers the rate; drawn disjoint, the rate is the level the
    served alarm keeps."""

    trials: int = Field(ge=0)
    seed: int
    pool_texts: int = Field(ge=0, description="validation + test answers the draws come from")
    reference_texts: int = Field(ge=1, description="texts drawn as the reference: the test split's size")
    window: int = Field(ge=1, description="texts drawn as the window: serve.monitor_window")
    alarm_rate: float | None = Field(None, ge=0, le=1, description="share of trials raising the alarm; target ≤ 0.07")
    signal_rates: dict[str, float] = Field(default_factory=dict, description="per signal: share of trials it fired")
    disjoint_alarm_rate: float | None = Field(None, ge=0, le=1, description="the same, reference and window disjoint")
    disjoint_signal_rates: dict[str, float] = Field(default_factory=dict)
    skipped_reason: str | None = Field(None, description="why some draws did not run (a pool too small for them)")


class DriftReferenceRecord(Record):
    """The manifest's summary of a written `reference.npz`."""

    file: str = Field(REFERENCE_NAME, description="path of the npz, relative to the folder the record sits in")
    sha256: str
    bytes: int = Field(ge=1)
    texts: int = Field(ge=1, description="reference size: test texts")
    window: int = Field(ge=1, description="served window (texts) the critical values hold for")
    level: float = Field(gt=0, lt=1, description="family-wise false-alarm level over all signals")
    critical_values: dict[str, float] = Field(description="per signal: the statistic above which it is drift")
    # Newer than the file itself: an older manifest loads with None.
    false_alarms: FalseAlarmCheck | None = Field(None, description="export's offline false-alarm check")
    estimated_accuracy: float | None = Field(
        None, ge=0, le=1, description="mean calibrated top probability on the test split: what the service expects"
    )
    test_accuracy: float | None = Field(
        None, ge=0, le=1, description="the variant's measured test accuracy beside it (single-label only)"
    )


def write_reference(path: Path, data: ReferenceData) -> DriftReferenceRecord:
    """Write `data` to `path` atomically (a reader sees the old file or the new one) and summarise it.

    Returns:
        The manifest record of the file written.
    """
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **{name: getattr(data, name) for name in _ROWS},
        format_version=np.int64(FORMAT_VERSION),
        window=np.int64(data.window),
        level=np.float64(data.level),
        signals=np.array(SIGNALS),
        critical_values=np.array([data.critical_values[s] for s in SIGNALS], dtype=np.float64),
    )
    atomic_write_bytes(path, buffer.getvalue())
    logger.info("wrote the drift reference %s (%d texts, window %d)", path, data.texts, data.window)
    return DriftReferenceRecord(
        file=path.name,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        texts=data.texts,
        window=data.window,
        level=data.level,
        critical_values=dict(data.critical_values),
    )


def read_reference(path: Path, *, expected_sha256: str | None = None) -> ReferenceData:
    """Read and check a `reference.npz`.

    Args:
        path: the file.
        expected_sha256: the manifest's hash of it; a file that differs is refused.

    Raises:
        ArtifactError: the file is missing, differs from the manifest, is not a readable npz, is of another format
            version, or an array is missing or malformed; the message names the file and the array.
    """
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (exported before drift references existed? export the run again)")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ArtifactError(f"{path}: sha256 differs from the manifest's (changed after export); export it again")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"holds one {type(loaded).__name__}, not a set of named arrays")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [name for name in (*_ROWS, *_META) if name not in arrays]
    if missing:
        raise ArtifactError(f"{path}: missing arrays {missing}")
    try:
        version = int(arrays["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version {version}, this textclf reads {FORMAT_VERSION}; export it again")
        signals = [str(s) for s in arrays["signals"]]
        values = np.asarray(arrays["critical_values"], dtype=np.float64).tolist()
        if len(signals) != len(values):
            raise ValueError(f"{len(signals)} signals but {len(values)} critical values")
        return ReferenceData(
            **{name: arrays[name] for name in _ROWS},
            window=int(arrays["window"]),
            level=float(arrays["level"]),
            critical_values=dict(zip(signals, values, strict=True)),
        )
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: {exc}") from None
