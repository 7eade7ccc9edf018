"""The drift reference of a variant: its answers on the test split, and the critical values of the service's drift
tests (`textclf.serving.drift`) for the served window size, computed here because the serve image has no scipy.

The alarm may fire on any of the four signals, so each test runs at the family-wise level ÷ 4 (Bonferroni): under no
drift, a full window raises the alarm with probability at most the level.

Export's one step is `write_references`: after the gates and the timing, every passing CPU variant gets its
`reference.npz` beside its model (so it ships with the variant in the Bento, and its sha256 in the variant's files
is checked wherever the folder is verified) and its summary in the manifest (`VariantRecord.drift_reference`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from textclf.artifacts.drift_reference import (
    REFERENCE_NAME,
    SIGNALS,
    DriftReferenceRecord,
    ReferenceData,
    write_reference,
)
from textclf.artifacts.records import FileEntry
from textclf.artifacts.schema import VariantRecord
from textclf.errors import ExportError
from textclf.inference.runtime import Classifier
from textclf.serving.drift import count_words

logger = logging.getLogger(__name__)

DEFAULT_LEVEL = 0.05  # family-wise false-alarm level of a full window over all signals


def critical_values(
    window: int, reference_texts: int, num_labels: int, level: float = DEFAULT_LEVEL
) -> dict[str, float]:
    """The statistic above which each signal counts as drift, for a window of `window` texts against a reference of
    `reference_texts`, each test at `level / len(SIGNALS)`.

    KS signals: the two-sided critical D from `scipy.stats.kstwo` (the one-sample Kolmogorov distribution) at the
    effective size round(N·M / (N + M)), the distribution `ks_2samp`'s asymptotic method reads its p-value from.
    `ks_2samp`'s exact method has no inverse, and the n → ∞ limit (`kstwobign`) sits further from the exact level at
    these sizes, on the conservative side. Both assume continuous values: on tied ones (token counts are integers) the
    test is conservative, so ties cost power, never false alarms.

    `label_mix`: (1 + N/M) × the χ² quantile with (labels − 1) degrees of freedom. The window's counts are compared
    with proportions estimated from M reference texts, not known ones; the reference's own sampling noise adds N/M to
    each count's variance, so under no drift the statistic is asymptotically (1 + N/M) times a χ²(labels − 1)
    variable. Without the factor the label mix alone would alarm several times too often
    (`tests/unit/test_drift.py::test_label_mix_false_alarm_rate_holds_its_share_of_the_level` measures it).

    Raises:
        ExportError: a window or reference without texts, fewer than two labels, or a level outside (0, 1).
    """
    if window < 1 or reference_texts < 1:
        raise ExportError(f"drift reference: window and reference need texts, got {window} and {reference_texts}")
    if num_labels < 2:
        raise ExportError(f"drift reference: a classifier has at least two labels, got {num_labels}")
    if not 0.0 < level < 1.0:
        raise ExportError(f"drift reference: the level must be in (0, 1), got {level}")
    per_signal = level / len(SIGNALS)
    effective_texts = round(window * reference_texts / (window + reference_texts))
    ks = float(stats.kstwo.isf(per_signal, max(effective_texts, 1)))
    chi2 = float((1.0 + window / reference_texts) * stats.chi2.isf(per_signal, num_labels - 1))
    return {signal: chi2 if signal == "label_mix" else ks for signal in SIGNALS}


def build_reference(
    logits: ArrayLike,
    input_tokens: ArrayLike,
    words: ArrayLike,
    truncated: ArrayLike,
    *,
    window: int,
    level: float = DEFAULT_LEVEL,
) -> ReferenceData:
    """A variant's drift reference from its answers on the test split, in one order.

    Args:
        logits: (texts, labels) the variant's raw logits.
        input_tokens: tokens the model read per text (after truncation, special tokens included), as the service
            counts them per answered text.
        words: words per text, counted by `textclf.serving.drift.count_words`.
        truncated: per text, whether it was cut at max_seq_len.
        window: the served window size, `serve.monitor_window`.
        level: the family-wise false-alarm level.

    Raises:
        ExportError: arrays that do not line up or hold impossible values (the message names the array).
    """
    scores = np.asarray(logits, dtype=np.float32)
    if scores.ndim != 2:
        raise ExportError(f"drift reference: logits must be (texts, labels), got shape {scores.shape}")
    try:
        return ReferenceData(
            logits=scores,
            labels=scores.argmax(axis=1),
            input_tokens=np.asarray(input_tokens),
            words=np.asarray(words),
            truncated=np.asarray(truncated, dtype=bool),
            window=window,
            level=level,
            critical_values=critical_values(window, scores.shape[0], scores.shape[1], level),
        )
    except ValueError as exc:
        raise ExportError(f"drift reference: {exc}") from None


def write_drift_reference(
    path: Path,
    logits: ArrayLike,
    input_tokens: ArrayLike,
    words: ArrayLike,
    truncated: ArrayLike,
    *,
    window: int,
    level: float = DEFAULT_LEVEL,
) -> DriftReferenceRecord:
    """Build the reference (see `build_reference`), write it atomically to `path` and return its manifest record."""
    data = build_reference(logits, input_tokens, words, truncated, window=window, level=level)
    record = write_reference(path, data)
    logger.info(
        "drift reference: %d texts, window %d, level %.3g, critical values %s",
        data.texts,
        window,
        level,
        {name: round(value, 4) for name, value in record.critical_values.items()},
    )
    return record


def variant_answers(
    classifier: Classifier, texts: Sequence[str], batch_size: int = 32
) -> tuple[np.ndarray, list[int], list[bool]]:
    """A variant's raw logits, input tokens (after truncation, special tokens included) and truncation flags on
    `texts`, read as the service reads them: cut at max_seq_len (`truncate`), one row per text, in order."""
    encodings = classifier.encode(list(texts))
    logits, truncated = classifier.infer_encoded(encodings, batch_size)
    return logits, [classifier.token_count(encoding) for encoding in encodings], truncated


def write_references(
    onnx_dir: Path,
    variants: dict[str, VariantRecord],
    classifiers: Mapping[str, Classifier],
    texts: Sequence[str],
    window: int,
    *,
    level: float = DEFAULT_LEVEL,
) -> None:
    """Write the drift reference of every passing variant among `classifiers` and record it in `variants`, in place.

    Each reference holds the variant's answers on `texts` (the test split) and the critical values for a served window
    of `window` texts (`serve.monitor_window`). It is rewritten on every export, reused variants included: the window
    is a serve setting, outside the variants' input key, and the file is cheap next to the gates.

    Args:
        onnx_dir: `artifacts/<run>/onnx`; each reference goes to `<variant>/reference.npz`.
        variants: the export's records by name; a written reference joins its variant's `files` (sha256 and size)
            and `drift_reference`, and `bytes` is recounted. A variant refused since (the speed gate) loses both.
        classifiers: the passing CPU variants, loaded as the service runs them (export's timing holds them).
        texts: the test split, in the order the gates read it.
        window: the served window size the critical values are for.
        level: the family-wise false-alarm level over the four signals.

    Raises:
        ExportError: a reference that cannot be built (the message names the array at fault).
    """
    words = [count_words(text) for text in texts]
    for name, record in list(variants.items()):
        if not record.passed:
            if record.drift_reference is not None:  # a reused record the speed gate has just refused: no folder now
                variants[name] = record.model_copy(update={"drift_reference": None})
            continue
        classifier = classifiers.get(name)
        if classifier is None:  # not a CPU variant: the service never monitors it
            continue
        logits, tokens, truncated = variant_answers(classifier, texts)
        drift = write_drift_reference(
            onnx_dir / name / REFERENCE_NAME, logits, tokens, words, truncated, window=window, level=level
        )
        files = dict(
            sorted({**record.files, REFERENCE_NAME: FileEntry(sha256=drift.sha256, bytes=drift.bytes)}.items())
        )
        update = {"files": files, "drift_reference": drift, "bytes": sum(entry.bytes for entry in files.values())}
        variants[name] = record.model_copy(update=update)
