"""Drift at serve time, numpy only (the serve image has no scipy): a per-worker window of the last N answered texts,
compared with export's reference at most once a second. `label_mix`: Pearson's χ² of the window's label counts against
the reference's mix; `confidence`, `input_tokens`, `tokens_per_word`: two-sample Kolmogorov–Smirnov D. A score is
statistic ÷ critical value (> 1: drift); the alarm is on once the window is full and any score passes 1. The critical
values hold for one window size and come from export (`textclf_export.drift_reference`, which has scipy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from textclf.artifacts.drift_reference import SIGNALS, DriftReferenceRecord, ReferenceData, read_reference
from textclf.errors import ConfigError

logger = logging.getLogger(__name__)

REPORT_MAX_AGE_S = 1.0  # a report is recomputed when read, at most this often
_ABSENT_LABEL_COUNT = 0.5  # the count given to a label the reference never answered (see `reference_label_mix`)


def count_words(text: str) -> int:
    """Whitespace-separated words: the `words` of a text, as export's reference and the service both count them."""
    return len(text.split())


def tokens_per_word(input_tokens: ArrayLike, words: ArrayLike) -> np.ndarray:
    """Tokens per word per text; a text without words (only symbols) counts as one word rather than dividing by 0."""
    result: np.ndarray = np.asarray(input_tokens, dtype=np.float64) / np.maximum(np.asarray(words), 1)
    return result


def ks_statistic(sample: ArrayLike, other: ArrayLike) -> float:
    """Two-sample Kolmogorov–Smirnov statistic D: the largest gap between the two empirical CDFs.

    Ties are handled as `scipy.stats.ks_2samp` does: both CDFs are read at every observed value, counting the values
    equal to it, so a tied value moves each CDF once by its full multiplicity.

    Raises:
        ValueError: either sample is empty.
    """
    a, b = np.sort(np.asarray(sample, dtype=np.float64)), np.sort(np.asarray(other, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        raise ValueError(f"KS statistic: both samples need a value, got {a.size} and {b.size}")
    both = np.concatenate([a, b])
    gaps = np.searchsorted(a, both, side="right") / a.size - np.searchsorted(b, both, side="right") / b.size
    return float(np.max(np.abs(gaps)))


def chi_square_statistic(observed: ArrayLike, expected: ArrayLike) -> float:
    """Pearson's χ² statistic Σ (observed − expected)² / expected, as `scipy.stats.chisquare` computes it.

    Raises:
        ValueError: shapes differ, or an expected count is not positive (`reference_label_mix` gives none).
    """
    obs, exp = np.asarray(observed, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if obs.shape != exp.shape:
        raise ValueError(f"χ² statistic: observed has shape {obs.shape}, expected {exp.shape}")
    if np.any(exp <= 0):
        raise ValueError("χ² statistic: every expected count must be positive")
    return float(np.sum((obs - exp) ** 2 / exp))


def reference_label_mix(labels: ArrayLike, num_labels: int) -> np.ndarray:
    """The reference's share of answers per label id, the expected proportions of a window's label counts.

    A label the reference never answered gets half a count instead of zero: with zero, one answer of a rare label
    the test split happened to miss would make the χ² infinite and the alarm fire. With half a count, one such answer
    adds about one to the statistic, and only a label answered far above that rate raises the alarm.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels).astype(np.float64)
    counts[counts == 0] = _ABSENT_LABEL_COUNT
    result: np.ndarray = counts / counts.sum()
    return result


@dataclass(frozen=True)
class DriftReference:
    """The reference side of every test, prepared once: the label mix, the samples (sorted, so that sorting them
    again per evaluation costs little), the critical values."""

    window: int  # the window size (texts) the critical values hold for
    critical_values: Mapping[str, float]
    label_mix: np.ndarray  # expected proportion per label id
    confidence: np.ndarray  # sorted, as are the two below
    input_tokens: np.ndarray
    tokens_per_word: np.ndarray
    estimated_accuracy: float  # mean confidence on the reference: the accuracy it expects without labels

    @classmethod
    def prepare(cls, data: ReferenceData, confidences: ArrayLike) -> DriftReference:
        """Prepare a read `reference.npz`, with per text the top-label score the service answers with (the
        variant's calibrated probabilities of `data.logits`), so window and reference are scored alike; raises
        ValueError unless there is one confidence per reference text."""
        confidence = np.sort(np.asarray(confidences, dtype=np.float64))
        if confidence.shape != (data.texts,):
            raise ValueError(f"reference: {data.texts} texts but confidences of shape {confidence.shape}")
        return cls(
            window=data.window,
            critical_values=dict(data.critical_values),
            label_mix=reference_label_mix(data.labels, data.num_labels),
            confidence=confidence,
            input_tokens=np.sort(data.input_tokens.astype(np.float64)),
            tokens_per_word=np.sort(tokens_per_word(data.input_tokens, data.words)),
            estimated_accuracy=float(confidence.mean()),
        )


def load_reference(
    variant_dir: Path, record: DriftReferenceRecord | None, probabilities: Callable[[np.ndarray], np.ndarray]
) -> DriftReference | None:
    """A variant's drift reference, read, checked against its manifest record and prepared; None where the manifest
    records none (a run exported before drift references: whoever serves it says so and runs without drift).

    Args:
        variant_dir: the variant's folder (`onnx/<variant>`), where the record's file lies.
        record: the variant's `drift_reference` in the manifest.
        probabilities: the variant's served probabilities of its logits (its calibration): each reference text's
            confidence is its top probability, as each answered text's is.

    Raises:
        ArtifactError: the file is missing, differs from its recorded sha256, or is malformed.
    """
    if record is None:
        return None
    data = read_reference(variant_dir / record.file, expected_sha256=record.sha256)
    return DriftReference.prepare(data, np.asarray(probabilities(data.logits)).max(axis=1))


@dataclass(frozen=True)
class WindowSnapshot:
    """A copy of a window's answers, oldest first, safe to compute on while the window keeps filling."""

    size: int
    seen: int  # answered texts observed since the window was made
    labels: np.ndarray
    confidence: np.ndarray
    input_tokens: np.ndarray
    words: np.ndarray

    @property
    def is_full(self) -> bool:
        return len(self.labels) == self.size


class DriftWindow:
    """The last `size` answered texts of one worker, in ring buffers: an append is O(1) and allocates nothing. A lock
    makes it thread-safe: the engine thread appends while the event loop (or a metrics read) takes snapshots."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"drift window size must be ≥ 1, got {size}")
        self.size = size
        self._labels, self._input_tokens, self._words = (np.zeros(size, dtype=np.int64) for _ in range(3))
        self._confidence = np.zeros(size, dtype=np.float64)
        self._next = self._seen = 0
        self._lock = threading.Lock()

    def observe(self, label: int, confidence: float, input_tokens: int, words: int) -> None:
        """Record one answered text (never a perturbed text or a chunk window), replacing the oldest when full."""
        with self._lock:
            i = self._next
            self._labels[i] = label
            self._confidence[i] = confidence
            self._input_tokens[i] = input_tokens
            self._words[i] = words
            self._next = i + 1 if i + 1 < self.size else 0
            self._seen += 1

    @property
    def seen(self) -> int:
        """Answered texts observed since the window was made (a reader compares it to tell whether any came)."""
        return self._seen

    def snapshot(self) -> WindowSnapshot:
        """The texts now in the window, oldest first."""
        with self._lock:
            arrays = (self._labels, self._confidence, self._input_tokens, self._words)
            if self._seen < self.size:  # not yet wrapped: the oldest text is at 0
                return WindowSnapshot(self.size, self._seen, *(a[: self._seen].copy() for a in arrays))
            start = self._next  # the oldest text, about to be overwritten
            return WindowSnapshot(self.size, self._seen, *(np.concatenate((a[start:], a[:start])) for a in arrays))


@dataclass(frozen=True)
class SignalResult:
    statistic: float | None  # None for an empty window
    critical_value: float
    score: float | None  # statistic ÷ critical value; None until the window is full


@dataclass(frozen=True)
class DriftReport:
    """One evaluation of a window against the reference: what `GET /monitor` and the drift gauges show."""

    window_size: int
    texts: int  # answered texts in the window now
    seen: int
    signals: dict[str, SignalResult]
    alarm: bool
    estimated_accuracy: float | None  # mean confidence over the window; None while it is empty
    reference_estimated_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of the report (`GET /monitor` adds the worker's pid)."""
        return asdict(self)


def evaluate(window: DriftWindow | WindowSnapshot, reference: DriftReference) -> DriftReport:
    """Compare a window with the reference on every signal.

    Statistics are computed on whatever the window holds, but scores and the alarm wait until it is full: the
    critical values hold for a full window, and a smaller one's statistics run larger by chance alone. Raises
    ValueError when the window's size is not the one the critical values were computed for.
    """
    snap = window.snapshot() if isinstance(window, DriftWindow) else window
    if snap.size != reference.window:
        raise ValueError(f"the window holds {snap.size} texts but the critical values are for {reference.window}")
    n = len(snap.labels)
    statistics: dict[str, float | None] = dict.fromkeys(SIGNALS)
    if n:
        counts = np.bincount(snap.labels, minlength=len(reference.label_mix))
        statistics["label_mix"] = chi_square_statistic(counts, reference.label_mix * n)
        per_text = {"confidence": snap.confidence, "input_tokens": snap.input_tokens}
        per_text["tokens_per_word"] = tokens_per_word(snap.input_tokens, snap.words)
        for name, values in per_text.items():
            statistics[name] = ks_statistic(values, getattr(reference, name))
    signals = {}
    for name, statistic in statistics.items():
        critical = reference.critical_values[name]
        score = statistic / critical if statistic is not None and snap.is_full else None
        signals[name] = SignalResult(statistic, critical, score)
    return DriftReport(
        window_size=snap.size,
        texts=n,
        seen=snap.seen,
        signals=signals,
        alarm=any(s.score is not None and s.score > 1.0 for s in signals.values()),
        estimated_accuracy=float(snap.confidence.mean()) if n else None,
        reference_estimated_accuracy=reference.estimated_accuracy,
    )


class DriftMonitor(DriftWindow):
    """One worker's drift state: its window of answered texts, the reference, and the last report, reused for up to
    `REPORT_MAX_AGE_S` so that reads (the metrics, `GET /monitor`) cost one evaluation a second at most."""

    def __init__(
        self, reference: DriftReference, window_size: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Raises ConfigError when `window_size` (serve.monitor_window) is not the window export tested for."""
        if window_size != reference.window:
            raise ConfigError(
                f"serve.monitor_window is {window_size}, but the drift reference's critical values were computed at "
                f"export for a window of {reference.window} texts; set it to {reference.window} or export again"
            )
        super().__init__(window_size)
        self.reference = reference
        self._clock = clock
        self._report_lock = threading.Lock()  # its own: a slow evaluation must not hold up `observe`
        self._last: tuple[float, DriftReport] | None = None

    def report(self) -> DriftReport:
        """The window evaluated now, or the last evaluation when it is younger than `REPORT_MAX_AGE_S`."""
        with self._report_lock:
            now = self._clock()
            if self._last is None or now - self._last[0] >= REPORT_MAX_AGE_S:
                self._last = (now, evaluate(self, self.reference))
            return self._last[1]
