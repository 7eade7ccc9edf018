"""Confidence fitted per variant: temperature scaling on the validation split's logits, measured on the test split.

Single-label: one temperature T minimising the NLL of softmax(logits / T). Multi-label: one temperature per label
(each label's sigmoid NLL) and, when asked, per-label thresholds maximising each label's F1 on validation. The
test split is never used to fit, only to report ECE / NLL / Brier before and after, each with a paired-bootstrap
95 % interval of (after − before), the risk–coverage curve at thresholds chosen on validation, and (multi-label) the
macro-F1 at the model's one threshold and at per-label ones. `textclf_export.calibrate` runs this per variant.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from textclf.artifacts.confidence import (
    ECE_BINS,
    ConfidenceRecord,
    ConfidenceTest,
    CurvePoint,
    Interval,
    LabelThresholdsF1,
    ReliabilityBin,
)
from textclf.inference.confidence import Temperature, calibrated_probabilities, scale_logits

logger = logging.getLogger(__name__)

TEMPERATURE_BOUNDS = (0.05, 20.0)  # past these, a temperature says the logits carry no usable scale, not a fit
MIN_VALIDATION_TEXTS = 50  # under this a fitted temperature mostly fits noise: the variant serves raw scores
MIN_LABEL_POSITIVES = 20  # a label's F1-best threshold on fewer positives is a guess; it keeps the model's one
BOOTSTRAP_RESAMPLES = 1000
CURVE_POINTS = 50  # coverage steps of 1/50: each curve accuracy is judged on ≥ 2 % of validation
_BOOTSTRAP_BLOCK_CELLS = 2_000_000  # resamples × texts held at once (16 MB of counts)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in `TEMPERATURE_BOUNDS` minimising the mean NLL of softmax(logits / T) at the true classes.

    Searched on log T (bounded Brent), where the NLL is far closer to a parabola than on T.
    """
    values = np.asarray(logits, dtype=np.float64)
    picked = values[np.arange(len(values)), np.asarray(labels, dtype=np.int64)]

    def nll(log_t: float) -> float:
        t = math.exp(log_t)
        return float(np.mean(logsumexp(values / t, axis=1) - picked / t))

    return _minimise_on_log_t(nll)


def fit_label_temperatures(logits: np.ndarray, truth: np.ndarray) -> list[float]:
    """Multi-label: per label, the temperature minimising the mean sigmoid NLL of logits / T (a label whose
    validation texts are all positive or all negative carries no scale to fit and keeps 1.0)."""
    values = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(truth, dtype=np.float64)
    temperatures = []
    for j in range(values.shape[1]):
        z, y = values[:, j], targets[:, j]
        if y.min() == y.max():
            logger.info("label %d: all validation texts %s, temperature kept at 1", j, "in" if y[0] else "out")
            temperatures.append(1.0)
            continue

        def nll(log_t: float, z: np.ndarray = z, y: np.ndarray = y) -> float:
            s = z / math.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, s) - y * s))

        temperatures.append(_minimise_on_log_t(nll))
    return temperatures


def _minimise_on_log_t(nll: Callable[[float], float]) -> float:
    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(nll, bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-6})
    # Bounded Brent stops within xatol of a bound; the clip keeps the recorded value inside it.
    return float(np.clip(math.exp(float(result.x)), low, high))


def f1_thresholds(probs: np.ndarray, truth: np.ndarray, default_threshold: float) -> list[float]:
    """Multi-label: per label, the threshold on `probs` (p ≥ t predicts the label) with the best validation F1.

    The threshold sits halfway between the last score kept and the next lower one, so it does not hinge on one
    validation text's exact score. A label with fewer than `MIN_LABEL_POSITIVES` positives keeps `default_threshold`.
    """
    thresholds = []
    for j in range(probs.shape[1]):
        p, y = np.asarray(probs[:, j], dtype=np.float64), np.asarray(truth[:, j], dtype=bool)
        positives = int(y.sum())
        if positives < MIN_LABEL_POSITIVES:
            thresholds.append(float(default_threshold))
            continue
        order = np.argsort(-p, kind="stable")
        scores, hits = p[order], y[order]
        kept = np.arange(1, len(p) + 1)  # predicted positives when the cut falls after each position
        f1 = 2 * np.cumsum(hits) / (kept + positives)
        # A cut is only possible between two different scores (or after the last).
        f1[np.append(scores[:-1] <= scores[1:], False)] = -1.0
        k = int(np.argmax(f1))  # the first best: the highest threshold among equal F1s
        if k == len(p) - 1:
            thresholds.append(float(scores[k]))
            continue
        middle = (scores[k] + scores[k + 1]) / 2
        thresholds.append(float(middle if middle > scores[k + 1] else scores[k]))
    return thresholds


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ over equal-width bins (lower, upper] of (bin share) × |mean confidence − accuracy|."""
    index = _bin_index(np.asarray(confidence, dtype=np.float64), bins)
    gaps = np.bincount(index, weights=np.asarray(confidence, dtype=np.float64) - correct, minlength=bins)
    return float(np.abs(gaps).sum() / len(index))


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    inner_edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    result: np.ndarray = np.searchsorted(inner_edges, confidence, side="left")
    return result


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[ReliabilityBin]:
    """The reliability diagram's bins: count, mean confidence and accuracy per equal-width bin."""
    conf = np.asarray(confidence, dtype=np.float64)
    index = _bin_index(conf, bins)
    counts = np.bincount(index, minlength=bins)
    conf_sums = np.bincount(index, weights=conf, minlength=bins)
    hit_sums = np.bincount(index, weights=np.asarray(correct, dtype=np.float64), minlength=bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return [
        ReliabilityBin(
            lower=float(edges[b]),
            upper=float(edges[b + 1]),
            count=int(counts[b]),
            mean_confidence=float(conf_sums[b] / counts[b]) if counts[b] else None,
            accuracy=float(hit_sums[b] / counts[b]) if counts[b] else None,
        )
        for b in range(bins)
    ]


@dataclass
class Scored:
    """One split's scores broken down per text, so a bootstrap resample is a count-weighted sum."""

    nll: np.ndarray  # (texts,): NLL of the text (multi-label: mean over its labels)
    brier: np.ndarray  # (texts,): single-label Σ over classes of squared error; multi-label: mean per label
    gaps: np.ndarray  # (texts, bins): Σ of (confidence − correct) of the text's decisions in each bin
    decisions_per_text: int  # 1, or the label count
    confidence: np.ndarray  # every decision's top-label confidence, flattened
    correct: np.ndarray  # and whether it was right

    def ece(self) -> float:
        """Expected calibration error over all decisions (what `expected_calibration_error` gives on them)."""
        return float(np.abs(self.gaps.sum(axis=0)).sum() / (len(self.nll) * self.decisions_per_text))


def score_split(logits: np.ndarray, truth: np.ndarray, temperature: Temperature | None, multi_label: bool) -> Scored:
    """NLL, Brier and calibration gaps per text of the probabilities served at `temperature` (None: raw)."""
    scaled = scale_logits(logits, temperature)
    probs = np.asarray(calibrated_probabilities(logits, temperature, multi_label), dtype=np.float64)
    rows = np.arange(len(scaled))
    if multi_label:
        y = truth.astype(np.float64)
        nll = (np.logaddexp(0.0, scaled) - y * scaled).mean(axis=1)
        brier = ((probs - y) ** 2).mean(axis=1)
        confidence = np.maximum(probs, 1.0 - probs)
        correct = ((probs >= 0.5) == truth.astype(bool)).astype(np.float64)
    else:
        nll = logsumexp(scaled, axis=1) - scaled[rows, truth]
        onehot = np.eye(scaled.shape[1])[truth]
        brier = ((probs - onehot) ** 2).sum(axis=1)
        confidence = probs.max(axis=1, keepdims=True)
        correct = (probs.argmax(axis=1) == truth).astype(np.float64)[:, None]
    gaps = np.zeros((len(scaled), ECE_BINS))
    owner = np.repeat(rows, confidence.shape[1])  # the text each flattened decision belongs to
    np.add.at(gaps, (owner, _bin_index(confidence.ravel(), ECE_BINS)), (confidence - correct).ravel())
    return Scored(nll, brier, gaps, confidence.shape[1], confidence.ravel(), correct.ravel())


def paired_bootstrap(before: Scored, after: Scored, resamples: int, seed: int) -> dict[str, Interval]:
    """95 % percentile intervals of (after − before) for ECE, NLL and Brier, both scored on the same resampled texts."""
    n = len(before.nll)
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[np.ndarray]] = {"ece": [], "nll": [], "brier": []}
    block = max(1, _BOOTSTRAP_BLOCK_CELLS // n)
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        drawn = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        deltas["nll"].append(counts @ (after.nll - before.nll) / n)
        deltas["brier"].append(counts @ (after.brier - before.brier) / n)
        decisions = n * before.decisions_per_text
        ece_after = np.abs(counts @ after.gaps).sum(axis=1) / decisions
        deltas["ece"].append(ece_after - np.abs(counts @ before.gaps).sum(axis=1) / decisions)
    intervals = {}
    for name, parts in deltas.items():
        low, high = np.percentile(np.concatenate(parts), [2.5, 97.5])
        intervals[name] = Interval(low=float(low), high=float(high))
    return intervals


def curve_thresholds(confidence: np.ndarray, points: int = CURVE_POINTS) -> np.ndarray:
    """Thresholds at the validation confidences' quantiles: coverage 1, 1 − 1/points, …, 1/points (ascending)."""
    ranked = np.sort(np.asarray(confidence, dtype=np.float64))[::-1]
    kept = np.ceil(np.arange(points, 0, -1) / points * len(ranked)).astype(np.int64)
    return np.unique(ranked[np.maximum(kept, 1) - 1])


def risk_coverage(confidence: np.ndarray, correct: np.ndarray, thresholds: np.ndarray) -> list[CurvePoint]:
    """At each threshold: the share of texts scoring ≥ it and their accuracy (None where none remain)."""
    conf, hits = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    points = []
    for t in thresholds:
        kept = conf >= t
        accuracy = float(hits[kept].mean()) if kept.any() else None
        points.append(CurvePoint(threshold=float(t), coverage=float(kept.mean()), accuracy=accuracy))
    return points


def fit_confidence(
    validation_logits: np.ndarray,
    validation_labels: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    *,
    threshold: float | None,
    per_label_thresholds: bool = False,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> ConfidenceRecord:
    """Fit one variant's confidence on validation and measure it on test.

    Args:
        validation_logits: (texts, labels) raw logits of the variant on the validation split.
        validation_labels: class ids (texts,), or for a multi-label model a (texts, labels) 0/1 matrix.
        test_logits: the same on the test split (used only to report, never to fit).
        test_labels: as `validation_labels`.
        threshold: None for a single-label model; a multi-label model's threshold (`train.threshold`).
        per_label_thresholds: multi-label: fit per-label F1-best thresholds (`export.multi_label_thresholds`).
        resamples: paired-bootstrap resamples of the test texts.
        seed: the bootstrap's seed (same seed, same intervals).

    Returns:
        The record for `export.variants.<name>.confidence`; skipped, with its reason, under
        `MIN_VALIDATION_TEXTS` validation texts.

    Raises:
        ValueError: logits and labels of different lengths or shapes.
    """
    multi_label = threshold is not None
    val_truth = _check(validation_logits, validation_labels, multi_label, "validation")
    test_truth = _check(test_logits, test_labels, multi_label, "test")
    texts = len(val_truth)
    if texts < MIN_VALIDATION_TEXTS:
        return skipped_record(texts)

    temperature: float | list[float]
    thresholds = best_thresholds = None
    if threshold is not None:
        temperature = fit_label_temperatures(validation_logits, val_truth)
        val_probs = calibrated_probabilities(validation_logits, temperature, multi_label=True)
        # Fitted whichever serves: the test macro-F1 at them is reported beside the fixed threshold's.
        best_thresholds = f1_thresholds(val_probs, val_truth, threshold)
        thresholds = best_thresholds if per_label_thresholds else None
    else:
        temperature = fit_temperature(validation_logits, val_truth)
    logger.info("confidence: temperature %s fitted on %d validation texts", temperature, texts)

    record = ConfidenceRecord(temperature=temperature, thresholds=thresholds, validation_texts=texts)
    after = None
    if len(test_truth):
        before = score_split(test_logits, test_truth, None, multi_label)
        after = score_split(test_logits, test_truth, temperature, multi_label)
        intervals = paired_bootstrap(before, after, resamples, seed)
        record.test = ConfidenceTest(
            texts=len(test_truth),
            bootstrap_resamples=resamples,
            ece_before=before.ece(),
            ece_after=after.ece(),
            ece_delta_ci95=intervals["ece"],
            nll_before=float(before.nll.mean()),
            nll_after=float(after.nll.mean()),
            nll_delta_ci95=intervals["nll"],
            brier_before=float(before.brier.mean()),
            brier_after=float(after.brier.mean()),
            brier_delta_ci95=intervals["brier"],
            reliability_before=reliability_bins(before.confidence, before.correct),
            reliability_after=reliability_bins(after.confidence, after.correct),
        )
        if threshold is not None and best_thresholds is not None:
            test_probs = calibrated_probabilities(test_logits, temperature, multi_label=True)
            record.label_thresholds_f1 = LabelThresholdsF1(
                served="per_label" if per_label_thresholds else "fixed",
                fixed_threshold=threshold,
                macro_f1_fixed=macro_f1(test_probs >= threshold, test_truth),
                per_label_thresholds=best_thresholds,
                macro_f1_per_label=macro_f1(test_probs >= np.asarray(best_thresholds), test_truth),
            )
    if not multi_label:  # a label set has no single confidence to answer or abstain on
        validation = score_split(validation_logits, val_truth, temperature, multi_label)
        cuts = curve_thresholds(validation.confidence)
        record.validation_curve = risk_coverage(validation.confidence, validation.correct, cuts)
        if after is not None:
            record.risk_coverage = risk_coverage(after.confidence, after.correct, cuts)
    return record


def skipped_record(validation_texts: int) -> ConfidenceRecord:
    """The record of a variant with fewer than `MIN_VALIDATION_TEXTS` validation texts: raw scores, and why."""
    reason = f"{validation_texts} validation texts, fewer than the {MIN_VALIDATION_TEXTS} a temperature is fitted on"
    logger.warning("confidence skipped: %s; the variant serves raw scores", reason)
    return ConfidenceRecord(skipped_reason=reason, validation_texts=validation_texts)


def macro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Multi-label: the mean over labels of each label's F1 on boolean (texts, labels) matrices (a label neither
    predicted nor true scores 0, as export's gates and train count it)."""
    tp = (predicted & truth).sum(axis=0)
    fp = (predicted & ~truth).sum(axis=0)
    fn = (~predicted & truth).sum(axis=0)
    denominator = 2 * tp + fp + fn
    return float(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0).mean())


def _check(logits: np.ndarray, labels: np.ndarray, multi_label: bool, split: str) -> np.ndarray:
    truth = np.asarray(labels)
    expected = logits.shape if multi_label else logits.shape[:1]
    if logits.ndim != 2 or truth.shape != expected:
        kind = "a (texts, labels) 0/1 matrix" if multi_label else "one class id per text"
        raise ValueError(f"{split}: logits {logits.shape} and labels {truth.shape} do not match (labels: {kind})")
    if not multi_label and len(truth) and (truth.min() < 0 or truth.max() >= logits.shape[1]):
        raise ValueError(f"{split}: class ids must be in [0, {logits.shape[1]}), got {truth.min()}..{truth.max()}")
    return truth.astype(bool) if multi_label else truth.astype(np.int64)
