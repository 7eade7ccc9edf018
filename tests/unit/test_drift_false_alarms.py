"""Export's false-alarm check of the drift tests (`textclf_export.drift_reference.false_alarm_check`) and the checks
`write_references` records beside each reference: synthetic answers, the service's own statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.artifacts.drift_reference import REFERENCE_NAME, SIGNALS, DriftReferenceRecord
from textclf.artifacts.schema import VariantRecord
from textclf.inference.predictions import calibrated_probabilities
from textclf_export.drift_reference import critical_values, false_alarm_check, write_references

LABELS = ["neg", "neutral", "pos"]


def pool(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Logits, served confidences, input tokens and words of n answers of one distribution (three labels)."""
    logits = rng.normal(size=(n, 3)) * np.array([1.0, 0.6, 1.2]) + np.array([0.3, -0.4, 0.2])
    confidence = np.asarray(calibrated_probabilities(logits.astype(np.float32), None, False)).max(axis=1)
    words = rng.integers(2, 60, size=n)
    tokens = np.minimum(np.round(words * rng.uniform(1.1, 1.6, size=n)) + 2, 128).astype(np.int64)
    return logits, confidence, tokens, words


def test_an_in_distribution_pool_alarms_near_the_level() -> None:
    # A pool large next to the draws (their overlap is small): both ways of drawing sit near the 5 % level, under it
    # by the ties of integer token counts and the conservative χ² of three labels.
    rng = np.random.default_rng(37)
    check = false_alarm_check(*pool(rng, 40_000), reference_texts=1276, window=1000, trials=400)
    assert check.alarm_rate is not None and check.disjoint_alarm_rate is not None
    for rate, per_signal in (
        (check.alarm_rate, check.signal_rates),
        (check.disjoint_alarm_rate, check.disjoint_signal_rates),
    ):
        assert 0.015 <= rate <= 0.07, check
        assert set(per_signal) == set(SIGNALS)
        # The alarm is "any signal": at least the most frequent one, at most all of them added up.
        assert max(per_signal.values()) <= rate <= sum(per_signal.values()) + 1e-12
    assert (check.trials, check.pool_texts, check.reference_texts, check.window) == (400, 40_000, 1276, 1000)
    assert check.skipped_reason is None


def _scipy_alarms(
    answers: tuple[np.ndarray, ...], reference: int, window: int, level: float, trials: int
) -> list[bool]:
    """The independent draws of the check, replayed with scipy's statistics (the drift module's own are numpy)."""
    logits, confidence, tokens, words = answers
    labels, per_word = logits.argmax(axis=1), tokens / np.maximum(words, 1)
    critical = critical_values(window, reference, logits.shape[1], level)
    rng, alarms = np.random.default_rng(0), []
    for _ in range(trials):
        ref = rng.choice(len(logits), size=reference, replace=False)
        win = rng.choice(len(logits), size=window, replace=False)
        counts = np.bincount(labels[ref], minlength=3).astype(float)
        counts[counts == 0] = 0.5
        expected = counts / counts.sum() * window
        chi2 = stats.chisquare(np.bincount(labels[win], minlength=3), expected).statistic
        fired = chi2 > critical["label_mix"]
        for name, values in (("confidence", confidence), ("input_tokens", tokens), ("tokens_per_word", per_word)):
            fired |= stats.ks_2samp(values[win], values[ref]).statistic > critical[name]
        alarms.append(bool(fired))
    return alarms


def test_the_rate_is_the_share_of_seeded_trials_whose_window_the_service_would_alarm_on() -> None:
    # At a level of 0.5 about half the trials alarm, so a rate counted wrongly (another draw, a signal left out, a
    # divisor off) shows: the check must equal scipy's verdicts on the very same draws.
    rng = np.random.default_rng(5)
    answers = pool(rng, 900)
    check = false_alarm_check(*answers, reference_texts=300, window=200, level=0.5, trials=60, seed=0)
    expected = _scipy_alarms(answers, 300, 200, 0.5, 60)
    assert 0.1 < np.mean(expected) < 0.9
    assert check.alarm_rate == pytest.approx(np.mean(expected), abs=1e-12)


def test_shared_answers_lower_the_independent_draws_rate_and_disjoint_draws_keep_the_level() -> None:
    # Draws of 1,276 and 1,000 from 2,342 answers: independent draws share about 545 of them, which pulls the two
    # samples together; disjoint draws are a permutation test's null and keep the level.
    rng = np.random.default_rng(8)
    check = false_alarm_check(*pool(rng, 2342), reference_texts=1276, window=1000, level=0.5, trials=200)
    assert check.alarm_rate is not None and check.disjoint_alarm_rate is not None
    assert check.alarm_rate < check.disjoint_alarm_rate / 3, check
    assert 0.3 <= check.disjoint_alarm_rate <= 0.6


def test_a_pool_too_small_for_the_draws_is_recorded_with_its_reason() -> None:
    rng = np.random.default_rng(1)
    small = false_alarm_check(*pool(rng, 900), reference_texts=1276, window=1000, trials=10)
    assert small.alarm_rate is None and small.disjoint_alarm_rate is None
    assert "900 pooled answers cannot give draws of 1276 and 1000" in (small.skipped_reason or "")
    middle = false_alarm_check(*pool(rng, 1500), reference_texts=1276, window=1000, trials=10)
    assert middle.alarm_rate is not None and middle.disjoint_alarm_rate is None
    assert "disjoint draws need 2276 pooled answers, not 1500" in (middle.skipped_reason or "")


class FakeClassifier:
    """What `write_references` reads of a `Classifier`: logits from each text's words, its token counts."""

    labels = LABELS
    multi_label = False

    def encode(self, texts: list[str]) -> list[str]:
        return texts

    def infer_encoded(self, encodings: list[str], batch_size: int) -> tuple[np.ndarray, list[bool]]:
        rows = [[len(t) % 7 - 3.0, len(t.split()) % 3 - 1.0, (sum(map(ord, t)) % 11) / 5.0 - 1.0] for t in encodings]
        return np.asarray(rows, dtype=np.float32), [False] * len(encodings)

    def token_count(self, encoding: str) -> int:
        return len(encoding.split()) + 2


def test_write_references_records_the_checks_beside_the_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vocabulary = ["a", "fine", "film", "with", "dull", "and", "bright", "moments", "of", "plot"]
    texts = [" ".join(rng.choice(vocabulary, size=rng.integers(2, 20))) for _ in range(400)]
    test, validation = texts[:150], texts[150:]
    (tmp_path / "optimized").mkdir()
    fitted = ConfidenceRecord(temperature=1.7, validation_texts=len(validation))
    record = VariantRecord(
        passed=True, reason="ok", input_key="k", built_at="now", test_accuracy=0.8, confidence=fitted
    )
    variants = {"optimized": record}
    classifier = FakeClassifier()
    write_references(
        tmp_path,
        variants,
        {"optimized": classifier},
        test,
        100,
        validation_texts=validation,
        trials=50,
    )
    drift = variants["optimized"].drift_reference
    assert isinstance(drift, DriftReferenceRecord) and (tmp_path / "optimized" / REFERENCE_NAME).is_file()
    logits, _ = classifier.infer_encoded(test, 32)
    served = np.asarray(calibrated_probabilities(logits, 1.7, False)).max(axis=1)  # at the fitted temperature
    assert drift.estimated_accuracy == pytest.approx(served.mean(), abs=1e-6)
    assert drift.test_accuracy == 0.8
    check = drift.false_alarms
    assert check is not None and (check.trials, check.pool_texts, check.reference_texts, check.window) == (
        50,
        400,
        150,
        100,
    )
    assert check.alarm_rate is not None and check.disjoint_alarm_rate is not None
    # An older manifest's record, without the checks, still loads.
    older = drift.model_dump(exclude={"false_alarms", "estimated_accuracy", "test_accuracy"})
    assert DriftReferenceRecord.model_validate(older).false_alarms is None
    # Without validation texts there is nothing to pool: the check says so rather than run on the test split alone.
    write_references(tmp_path, variants, {"optimized": classifier}, test, 100)
    alone = variants["optimized"].drift_reference
    assert alone is not None and alone.false_alarms is not None and alone.false_alarms.alarm_rate is None
    assert alone.false_alarms.skipped_reason == "no validation texts to pool with the test split"
