"""The drift reference of a variant: its answers on the test split, and the critical values of the service's drift
tests (`textclf.serving.drift`) for the served window size, computed here because the serve image has no scipy.

The alarm may fire on any of the four signals, so each test runs at the family-wise level ÷ 4 (Bonferroni): under no
drift, a full window raises the alarm with probability at most the level.

Export's one step is `write_references`: after the gates and the timing, every passing CPU variant gets its
`reference.npz` beside its model (so it ships with the variant in the Bento, and its sha256 in the variant's files
is checked wherever the folder is verified) and its summary in the manifest (`VariantRecord.drift_reference`), with
two checks of what the service will say about it: the false-alarm rate of its tests on the variant's own answers
(`false_alarm_check`) and the estimated accuracy (mean calibrated top probability on test) beside the measured one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from textclf.artifacts.drift_reference import (
    REFERENCE_NAME,
    SIGNALS,
    DriftReferenceRecord,
    FalseAlarmCheck,
    ReferenceData,
    write_reference,
)
from textclf.artifacts.records import FileEntry
from textclf.artifacts.schema import VariantRecord
from textclf.errors import ExportError
from textclf.inference.predictions import calibrated_probabilities
from textclf.inference.runtime import Classifier
from textclf.serving.drift import DriftReference, WindowSnapshot, count_words, evaluate

logger = logging.getLogger(__name__)

DEFAULT_LEVEL = 0.05  # family-wise false-alarm level of a full window over all signals
FALSE_ALARM_TRIALS: Final = 1000  # the offline trials per variant
FALSE_ALARM_SEED: Final = 0


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


def false_alarm_check(
    logits: ArrayLike,
    confidences: ArrayLike,
    input_tokens: ArrayLike,
    words: ArrayLike,
    *,
    reference_texts: int,
    window: int,
    level: float = DEFAULT_LEVEL,
    trials: int = FALSE_ALARM_TRIALS,
    seed: int = FALSE_ALARM_SEED,
) -> FalseAlarmCheck:
    """How often the service's drift tests raise the alarm when nothing drifted, on one variant's own answers.

    Each trial draws `reference_texts` answers as the reference and `window` answers as the window, and evaluates the
    window against the reference with the service's own code (`DriftReference.prepare`, `evaluate`) at the critical
    values for those sizes. Both come from one pool, so every alarm is a false one. Two ways of drawing, each over
    `trials` trials from a generator seeded with `seed`:

    - independent (the issue's check, `alarm_rate`): the reference, then the window, each without replacement. On a
      pool not much larger than the draws they share many answers (about reference × window ÷ pool), which pulls the
      two samples together: the rate falls well under the level (the variance of a CDF gap is 1/R + 1/W − 2/pool
      instead of 1/R + 1/W: 56 % of it on the default run's pool of 2,552, drawn 1,276 and 1,000).
    - disjoint (`disjoint_alarm_rate`): one permutation of the pool, the reference its first texts, the window the
      next. The null distribution is then the tests' own (a permutation test's), so the rate measures the level the
      served alarm keeps on this model's answers, ties and few labels included. It needs a pool of at least
      reference + window texts.

    Args:
        logits: (texts, labels) raw logits of the pooled answers (validation + test).
        confidences: per text the served confidence: the top calibrated probability.
        input_tokens: tokens read per text (after truncation); words: words per text (`count_words`).
        reference_texts, window: the draws' sizes: the test split's size and `serve.monitor_window`.

    Returns:
        The check; a way of drawing the pool is too small for has no rates (`skipped_reason` says why).
    """
    scores = np.asarray(logits, dtype=np.float32)
    pool = len(scores)
    check: dict[str, Any] = {"trials": trials, "seed": seed, "pool_texts": pool, "window": window}
    check["reference_texts"] = reference_texts
    if pool < max(reference_texts, window) or trials < 1:
        reason = f"{pool} pooled answers cannot give draws of {reference_texts} and {window} texts without replacement"
        return FalseAlarmCheck(**check, skipped_reason=reason if trials >= 1 else "no trials asked")
    answers = (scores, scores.argmax(axis=1), *(np.asarray(a) for a in (confidences, input_tokens, words)))
    critical, sizes = critical_values(window, reference_texts, scores.shape[1], level), (reference_texts, window)
    check["alarm_rate"], check["signal_rates"] = _alarm_rates(answers, sizes, critical, level, False, trials, seed)
    if pool >= reference_texts + window:
        rates = _alarm_rates(answers, sizes, critical, level, True, trials, seed)
        check["disjoint_alarm_rate"], check["disjoint_signal_rates"] = rates
    else:
        check["skipped_reason"] = f"disjoint draws need {reference_texts + window} pooled answers, not {pool}"
    return FalseAlarmCheck(**check)


def _alarm_rates(
    answers: tuple[np.ndarray, ...],
    sizes: tuple[int, int],
    critical: dict[str, float],
    level: float,
    disjoint: bool,
    trials: int,
    seed: int,
) -> tuple[float, dict[str, float]]:
    """The share of trials that raised the alarm, and per signal the share it fired in (see `false_alarm_check`)."""
    logits, labels, confidence, tokens, words = answers
    (pool, reference_texts), window = (len(logits), sizes[0]), sizes[1]
    flags = np.zeros(reference_texts, dtype=bool)  # the tests read no truncation flags
    rng = np.random.default_rng(seed)
    fired = np.zeros((trials, len(SIGNALS)), dtype=bool)
    alarms = 0
    for trial in range(trials):
        if disjoint:
            order = rng.permutation(pool)
            ref, win = order[:reference_texts], order[reference_texts : reference_texts + window]
        else:
            ref = rng.choice(pool, size=reference_texts, replace=False)
            win = rng.choice(pool, size=window, replace=False)
        data = ReferenceData(logits[ref], labels[ref], tokens[ref], words[ref], flags, window, level, critical)
        snapshot = WindowSnapshot(window, window, labels[win], confidence[win], tokens[win], words[win])
        report = evaluate(snapshot, DriftReference.prepare(data, confidence[ref]))
        fired[trial] = [(report.signals[s].score or 0.0) > 1.0 for s in SIGNALS]
        alarms += report.alarm
    return alarms / trials, dict(zip(SIGNALS, fired.mean(axis=0).tolist(), strict=True))


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
    validation_texts: Sequence[str] = (),
    trials: int = FALSE_ALARM_TRIALS,
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
        validation_texts: the validation split, pooled with the test split for each variant's false-alarm check
            (`false_alarm_check`, `trials` trials; each variant scores it once more, ~3.5 s for `int8-qdq` on the
            default run, 2-core Zen 3, 2026-12-07: not worth threading the confidence fit's logits through): none,
            no check.

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
        test = (logits, tokens, words)
        drift = _checked(name, record, classifier, test, validation_texts, drift, level=level, trials=trials)
        files = dict(
            sorted({**record.files, REFERENCE_NAME: FileEntry(sha256=drift.sha256, bytes=drift.bytes)}.items())
        )
        update = {"files": files, "drift_reference": drift, "bytes": sum(entry.bytes for entry in files.values())}
        variants[name] = record.model_copy(update=update)


def _checked(
    name: str,
    record: VariantRecord,
    classifier: Classifier,
    test: tuple[np.ndarray, list[int], list[int]],
    validation_texts: Sequence[str],
    drift: DriftReferenceRecord,
    *,
    level: float,
    trials: int,
) -> DriftReferenceRecord:
    """`drift` with the variant's estimated and measured test accuracy and its false-alarm check, logged."""
    started = time.perf_counter()
    # Scores as the variant serves them (`ServedConfidence`): its fitted temperature; a skipped fit records none.
    temperature = record.confidence.temperature if record.confidence is not None else None

    def confidence(logits: np.ndarray) -> np.ndarray:
        return np.asarray(calibrated_probabilities(logits, temperature, classifier.multi_label)).max(axis=1)

    logits, tokens, words = test
    estimated = float(confidence(logits).mean())
    measured = None if classifier.multi_label else record.test_accuracy  # exact-match accuracy is no top-label one
    if validation_texts:
        v_logits, v_tokens, _ = variant_answers(classifier, validation_texts)
        pool_logits = np.concatenate([v_logits, logits])
        pool_words = [count_words(text) for text in validation_texts] + list(words)
        check = false_alarm_check(
            pool_logits,
            confidence(pool_logits),
            [*v_tokens, *tokens],
            pool_words,
            reference_texts=len(logits),
            window=drift.window,
            level=level,
            trials=trials,
        )
    else:
        check = FalseAlarmCheck(
            trials=0,
            seed=FALSE_ALARM_SEED,
            pool_texts=0,
            reference_texts=len(logits),
            window=drift.window,
            skipped_reason="no validation texts to pool with the test split",
        )
    rate = "-" if check.alarm_rate is None else f"{check.alarm_rate:.3f}"
    disjoint = "-" if check.disjoint_alarm_rate is None else f"{check.disjoint_alarm_rate:.3f}"
    logger.info(
        "%s: drift false alarms over %d trials (reference %d, window %d, pool %d): %s drawn independently (per "
        "signal %s), %s disjoint (per signal %s)%s; estimated accuracy %.4f, measured %s (%.1f s)",
        name,
        check.trials,
        check.reference_texts,
        check.window,
        check.pool_texts,
        rate,
        {signal: round(value, 3) for signal, value in check.signal_rates.items()},
        disjoint,
        {signal: round(value, 3) for signal, value in check.disjoint_signal_rates.items()},
        f" ({check.skipped_reason})" if check.skipped_reason else "",
        estimated,
        "-" if measured is None else f"{measured:.4f}",
        time.perf_counter() - started,
    )
    return drift.model_copy(update={"false_alarms": check, "estimated_accuracy": estimated, "test_accuracy": measured})
