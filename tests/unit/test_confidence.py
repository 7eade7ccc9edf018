"""Confidence (issue 36): temperatures and per-label thresholds fitted on validation, ECE / NLL / Brier with paired
bootstrap intervals on test, the risk–coverage curve, and the serve-time threshold rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from textclf.artifacts.confidence import ConfidenceRecord, CurvePoint
from textclf.errors import ConfigError, RequestError
from textclf.inference.confidence import (
    SelectiveThreshold,
    abstained,
    calibrated_probabilities,
    request_threshold,
    resolve_threshold,
    scale_logits,
    threshold_for_accuracy,
)
from textclf.inference.predictions import softmax
from textclf_export.confidence import (
    MIN_LABEL_POSITIVES,
    MIN_VALIDATION_TEXTS,
    TEMPERATURE_BOUNDS,
    expected_calibration_error,
    f1_thresholds,
    fit_confidence,
    fit_label_temperatures,
    fit_temperature,
    paired_bootstrap,
    reliability_bins,
    score_split,
)


def calibrated_single(seed: int, texts: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated model and labels drawn from its own softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (texts, classes))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (rng.random(texts)[:, None] > cumulative).sum(axis=1)
    return logits, labels


def calibrated_multi(seed: int, texts: int, labels: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-label logits of a calibrated multi-label model (centred on `shift`) and label sets drawn from its
    sigmoids."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(shift, 2.0, (texts, labels))
    truth = rng.random(logits.shape) < 1.0 / (1.0 + np.exp(-logits))
    return logits, truth.astype(np.int64)


# -- fitting -----------------------------------------------------------------------------------------------------
def test_an_overconfident_models_temperature_is_recovered() -> None:
    logits, labels = calibrated_single(seed=1, texts=50_000)
    assert fit_temperature(2.5 * logits, labels) == pytest.approx(2.5, abs=0.05)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)


def test_per_label_temperatures_are_recovered_within_0_05() -> None:
    true_temperatures = [0.5, 1.0, 2.5]
    logits, truth = calibrated_multi(seed=3, texts=80_000, labels=3)
    fitted = fit_label_temperatures(logits * np.array(true_temperatures), truth)
    assert fitted == pytest.approx(true_temperatures, abs=0.05)


def test_a_label_with_one_outcome_only_keeps_temperature_1() -> None:
    logits, truth = calibrated_multi(seed=4, texts=500, labels=2)
    truth[:, 1] = 0
    assert fit_label_temperatures(3.0 * logits, truth)[1] == 1.0


def test_temperatures_stay_inside_their_bounds() -> None:
    low, high = TEMPERATURE_BOUNDS
    margins = np.linspace(0.5, 3.0, 200)
    logits = np.stack([margins, -margins], axis=1)
    # Every text right with a margin: the NLL keeps falling as T → 0, so the fit stops at the lower bound.
    always_right = fit_temperature(logits, np.zeros(200, dtype=np.int64))
    # Every text wrong: the NLL keeps falling as T → ∞ (towards the uniform answer), so it stops at the upper one.
    always_wrong = fit_temperature(logits, np.ones(200, dtype=np.int64))
    assert low <= always_right <= low * 1.001
    assert high / 1.001 <= always_wrong <= high


def test_per_label_thresholds_recover_known_offsets_within_0_05() -> None:
    # Each label is on, steeply, past its own cut of the score: its F1-best threshold is that cut.
    rng = np.random.default_rng(5)
    offsets = np.array([0.2, 0.5, 0.75])
    probs = rng.random((4000, 3))
    truth = rng.random(probs.shape) < 1.0 / (1.0 + np.exp(-60.0 * (probs - offsets)))
    assert f1_thresholds(probs, truth, default_threshold=0.5) == pytest.approx(offsets.tolist(), abs=0.05)


def test_f1_thresholds_reach_the_best_f1_a_brute_force_search_finds() -> None:
    rng = np.random.default_rng(6)
    probs = rng.random((300, 4))
    truth = rng.random(probs.shape) < probs**2  # noisy: the best cut is not obvious

    def f1(p: np.ndarray, y: np.ndarray, t: float) -> float:
        predicted = p >= t
        tp = (predicted & y).sum()
        return float(2 * tp / (predicted.sum() + y.sum()))

    chosen = f1_thresholds(probs, truth, default_threshold=0.5)
    for j, t in enumerate(chosen):
        best = max(f1(probs[:, j], truth[:, j], float(c)) for c in probs[:, j])
        assert f1(probs[:, j], truth[:, j], t) == pytest.approx(best)


def test_a_threshold_never_cuts_inside_tied_scores() -> None:
    # 20 sure positives at 0.9, then 31 texts tied at 0.8 (the first of them positive), then 5 stray positives
    # among the rest. Cutting after that first tied text would score F1 42/47, but no threshold can keep it without
    # its 30 negative twins; the best real cut is above the tie (F1 40/46).
    probs = np.array([0.9] * 20 + [0.8] * 31 + [0.1] * 49)[:, None]
    truth = np.zeros((100, 1), dtype=bool)
    truth[:21, 0] = True
    truth[-5:, 0] = True
    (threshold,) = f1_thresholds(probs, truth, default_threshold=0.5)
    assert 0.8 < threshold < 0.9


def test_a_label_with_too_few_positives_keeps_the_default_threshold() -> None:
    probs = np.linspace(0.0, 1.0, 200)[:, None].repeat(2, axis=1)
    truth = np.zeros((200, 2), dtype=bool)
    truth[-MIN_LABEL_POSITIVES:, 0] = True
    truth[-(MIN_LABEL_POSITIVES - 1) :, 1] = True
    fitted = f1_thresholds(probs, truth, default_threshold=0.4)
    assert fitted[0] != 0.4 and probs[-MIN_LABEL_POSITIVES, 0] >= fitted[0] > probs[-MIN_LABEL_POSITIVES - 1, 0]
    assert fitted[1] == 0.4


# -- metrics -----------------------------------------------------------------------------------------------------
def test_ece_matches_a_hand_computation() -> None:
    # Bins of width 1/15: 0.95 → (14/15, 1], 0.65 → (9/15, 10/15], 0.55 → (8/15, 9/15].
    confidence = np.array([0.95, 0.95, 0.65, 0.55])
    correct = np.array([1.0, 0.0, 1.0, 1.0])
    by_hand = 2 / 4 * abs(0.95 - 0.5) + 1 / 4 * abs(0.65 - 1) + 1 / 4 * abs(0.55 - 1)
    assert expected_calibration_error(confidence, correct) == pytest.approx(by_hand)
    bins = reliability_bins(confidence, correct)
    assert [b.count for b in bins if b.count] == [1, 1, 2]
    assert bins[14].mean_confidence == pytest.approx(0.95) and bins[14].accuracy == pytest.approx(0.5)
    assert bins[0].accuracy is None


def test_a_bin_includes_its_upper_edge() -> None:
    # 1/3 is bin 4's upper edge, (4/15, 5/15]; a text scoring exactly 1.0 is in the last bin.
    bins = reliability_bins(np.array([5 / 15, 1.0]), np.array([1.0, 1.0]))
    assert bins[4].count == 1 and bins[14].count == 1


def test_nll_and_brier_match_a_hand_computation() -> None:
    single = score_split(np.log(np.array([[0.7, 0.2, 0.1]])), np.array([0]), None, multi_label=False)
    assert single.nll[0] == pytest.approx(-math.log(0.7))
    assert single.brier[0] == pytest.approx(0.3**2 + 0.2**2 + 0.1**2)  # multi-class: summed over classes
    logits = np.log(np.array([[0.8 / 0.2, 0.3 / 0.7]]))  # sigmoid → 0.8, 0.3
    multi = score_split(logits, np.array([[1, 0]]), None, multi_label=True)
    assert multi.nll[0] == pytest.approx((-math.log(0.8) - math.log(0.7)) / 2)
    assert multi.brier[0] == pytest.approx((0.2**2 + 0.3**2) / 2)  # multi-label: mean per label
    # Its ECE pools the (text, label) decisions: max(p, 1 − p) = 0.8 and 0.7, both right.
    assert multi.ece() == pytest.approx(expected_calibration_error(np.array([0.8, 0.7]), np.array([1.0, 1.0])))


def test_the_bootstrap_interval_is_zero_when_nothing_changed_and_repeats_with_its_seed() -> None:
    logits, labels = calibrated_single(seed=7, texts=400)
    scored = score_split(logits, labels, None, multi_label=False)
    same = paired_bootstrap(scored, scored, resamples=200, seed=0)
    assert all(i.low == 0.0 and i.high == 0.0 for i in same.values())
    hotter = score_split(logits, labels, 3.0, multi_label=False)
    first = paired_bootstrap(scored, hotter, resamples=200, seed=1)
    assert first == paired_bootstrap(scored, hotter, resamples=200, seed=1)
    assert first != paired_bootstrap(scored, hotter, resamples=200, seed=2)


# -- the whole fit -----------------------------------------------------------------------------------------------
def test_fitting_an_overconfident_model_lowers_nll_and_brier_on_test() -> None:
    val_logits, val_labels = calibrated_single(seed=10, texts=3000)
    test_logits, test_labels = calibrated_single(seed=11, texts=1276)
    record = fit_confidence(2.5 * val_logits, val_labels, 2.5 * test_logits, test_labels, threshold=None)
    assert record.skipped_reason is None and record.thresholds is None
    assert record.temperature == pytest.approx(2.5, abs=0.15)
    test = record.test
    assert test is not None and test.texts == 1276
    assert test.nll_after < test.nll_before and test.nll_delta_ci95.high < 0
    assert test.brier_after < test.brier_before and test.brier_delta_ci95.high < 0
    assert test.ece_after < test.ece_before and test.ece_delta_ci95.high < 0
    assert test.ece_before == pytest.approx(
        expected_calibration_error(
            softmax(2.5 * test_logits).max(axis=1), softmax(test_logits).argmax(1) == test_labels
        )
    )
    # Thresholds are chosen on validation: its lowest answers every validation text; the test curve shares them.
    assert record.validation_curve[0].coverage == 1.0
    assert [p.threshold for p in record.risk_coverage] == [p.threshold for p in record.validation_curve]
    coverages = [p.coverage for p in record.risk_coverage]
    assert coverages == sorted(coverages, reverse=True)
    # The curve's accuracies are those of the calibrated scores: texts scoring ≥ 0.9 are right about 90 %+.
    high = [p for p in record.validation_curve if p.threshold >= 0.9]
    assert high and all(p.accuracy is not None and p.accuracy >= 0.85 for p in high)
    ConfidenceRecord.model_validate_json(record.model_dump_json())  # the manifest round trip


def test_multi_label_fit_gives_per_label_temperatures_thresholds_and_no_curve() -> None:
    val_logits, val_truth = calibrated_multi(seed=12, texts=2000, labels=3)
    test_logits, test_truth = calibrated_multi(seed=13, texts=800, labels=3)
    # Label 2 is rare in both splits: too few validation positives for its own threshold.
    val_logits[:, 2], val_truth[:, 2] = [a[:, 0] for a in calibrated_multi(seed=16, texts=2000, labels=1, shift=-8)]
    test_logits[:, 2], test_truth[:, 2] = [a[:, 0] for a in calibrated_multi(seed=17, texts=800, labels=1, shift=-8)]
    assert 0 < val_truth[:, 2].sum() < MIN_LABEL_POSITIVES
    scale = np.array([2.0, 0.7, 1.0])
    record = fit_confidence(
        val_logits * scale, val_truth, test_logits * scale, test_truth, threshold=0.45, per_label_thresholds=True
    )
    assert isinstance(record.temperature, list) and record.temperature[:2] == pytest.approx([2.0, 0.7], abs=0.15)
    assert record.thresholds is not None and len(record.thresholds) == 3 and record.thresholds[2] == 0.45
    assert record.test is not None and record.test.nll_after < record.test.nll_before
    assert record.risk_coverage == [] and record.validation_curve == []
    fixed = fit_confidence(val_logits, val_truth, test_logits, test_truth, threshold=0.45)
    assert fixed.thresholds is None


def test_too_few_validation_texts_skip_the_fit_with_the_reason() -> None:
    logits, labels = calibrated_single(seed=14, texts=MIN_VALIDATION_TEXTS)
    skipped = fit_confidence(logits[:-1], labels[:-1], logits, labels, threshold=None)
    assert skipped.temperature is None and skipped.test is None and not skipped.is_fitted
    assert skipped.skipped_reason is not None and str(MIN_VALIDATION_TEXTS - 1) in skipped.skipped_reason
    assert fit_confidence(logits, labels, logits, labels, threshold=None).is_fitted


def test_mismatched_labels_are_refused_naming_the_split() -> None:
    logits, labels = calibrated_single(seed=15, texts=60)
    with pytest.raises(ValueError, match="test: logits"):
        fit_confidence(logits, labels, logits, labels[:-1], threshold=None)
    with pytest.raises(ValueError, match="validation: class ids"):
        fit_confidence(logits, labels + 3, logits, labels, threshold=None)


def test_a_record_must_be_fitted_or_say_why_not() -> None:
    with pytest.raises(ValueError, match="exactly one of temperature and skipped_reason"):
        ConfidenceRecord(validation_texts=100)


# -- serve time --------------------------------------------------------------------------------------------------
def test_temperatures_scale_logits_overall_or_per_label() -> None:
    logits = np.array([[2.0, -4.0, 1.0]])
    assert scale_logits(logits, None).tolist() == logits.tolist()
    assert scale_logits(logits, 2.0).tolist() == [[1.0, -2.0, 0.5]]
    assert scale_logits(logits, [2.0, 4.0, 0.5]).tolist() == [[1.0, -1.0, 2.0]]
    assert calibrated_probabilities(logits, 2.0, multi_label=False) == pytest.approx(softmax(logits / 2.0))
    with pytest.raises(ValueError, match="one per label"):
        scale_logits(logits, [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        scale_logits(logits, 0.0)


CURVE = [
    CurvePoint(threshold=0.5, coverage=1.0, accuracy=0.85),
    CurvePoint(threshold=0.6, coverage=0.8, accuracy=0.90),
    CurvePoint(threshold=0.7, coverage=0.6, accuracy=0.96),
    CurvePoint(threshold=0.8, coverage=0.4, accuracy=0.94),
    CurvePoint(threshold=0.9, coverage=0.2, accuracy=0.97),
    CurvePoint(threshold=0.99, coverage=0.0, accuracy=None),  # no text left: not a threshold to judge
]


@pytest.mark.parametrize(
    ("target", "threshold"),
    [(0.80, 0.5), (0.85, 0.5), (0.90, 0.6), (0.93, 0.7), (0.95, 0.9), (0.97, 0.9)],
)
def test_the_target_accuracy_rule_holds_for_every_higher_threshold(target: float, threshold: float) -> None:
    # 0.95: 0.7 alone reaches 0.96, but 0.8 above it dips to 0.94, so the lowest t that holds above is 0.9.
    assert threshold_for_accuracy(list(reversed(CURVE)), target).threshold == threshold


def test_an_unreachable_target_names_the_best_reachable_accuracy() -> None:
    with pytest.raises(ConfigError, match=r"best reachable is 0\.9700 \(threshold 0\.9000, coverage 0\.200\)"):
        threshold_for_accuracy(CURVE, 0.98)


def test_resolving_the_deploys_threshold() -> None:
    record = ConfidenceRecord(temperature=1.5, validation_texts=500, validation_curve=CURVE)
    resolved = resolve_threshold(record, min_confidence=None, target_accuracy=0.93, multi_label=False)
    assert resolved == SelectiveThreshold(0.7, "target_accuracy", 0.93, 0.6, 0.96)
    assert resolved.describe()["min_confidence"] == 0.7
    assert resolve_threshold(None, min_confidence=0.8, target_accuracy=None, multi_label=False) == SelectiveThreshold(
        0.8, "min_confidence"
    )
    assert resolve_threshold(record, min_confidence=None, target_accuracy=None, multi_label=False) is None


@pytest.mark.parametrize(
    ("min_confidence", "target_accuracy", "multi_label", "message"),
    [
        (0.8, 0.9, False, "both set"),
        (0.8, None, True, "serve.min_confidence: a multi-label model"),
        (None, 0.9, True, "serve.target_accuracy: a multi-label model"),
        (1.2, None, False, r"min_confidence must be in \[0, 1\]"),
        (None, 0.0, False, r"target_accuracy must be in \(0, 1\]"),
        (None, 0.99, False, "serve.target_accuracy 0.99 is not reached.*best reachable is 0.9700"),
    ],
)
def test_bad_selective_settings_are_refused_at_start(
    min_confidence: float | None, target_accuracy: float | None, multi_label: bool, message: str
) -> None:
    record = ConfidenceRecord(temperature=1.5, validation_texts=500, validation_curve=CURVE)
    with pytest.raises(ConfigError, match=message):
        resolve_threshold(
            record, min_confidence=min_confidence, target_accuracy=target_accuracy, multi_label=multi_label
        )


def test_a_target_needs_a_fitted_confidence() -> None:
    skipped = ConfidenceRecord(skipped_reason="12 validation texts", validation_texts=12)
    with pytest.raises(ConfigError, match="skipped: 12 validation texts"):
        resolve_threshold(skipped, min_confidence=None, target_accuracy=0.9, multi_label=False)
    with pytest.raises(ConfigError, match="export recorded no confidence"):
        resolve_threshold(None, min_confidence=None, target_accuracy=0.9, multi_label=False)


def test_a_requests_own_min_confidence_wins_and_is_checked() -> None:
    served = SelectiveThreshold(0.7, "min_confidence")
    assert request_threshold(None, served, multi_label=False) == 0.7
    assert request_threshold(None, None, multi_label=False) is None
    assert request_threshold(0.2, served, multi_label=False) == 0.2
    assert request_threshold(1, None, multi_label=False) == 1.0
    for bad in (1.5, -0.1, "0.5", True, float("nan")):
        with pytest.raises(RequestError, match="min_confidence must be a number in") as caught:
            request_threshold(bad, served, multi_label=False)
        assert caught.value.status == 422
    with pytest.raises(RequestError, match="multi-label"):
        request_threshold(0.5, None, multi_label=True)


def test_an_answer_abstains_under_the_threshold_only() -> None:
    scores = [0.69, 0.7, 0.95]
    assert abstained(scores, 0.7).tolist() == [True, False, False]
    assert abstained(scores, None).tolist() == [False, False, False]
