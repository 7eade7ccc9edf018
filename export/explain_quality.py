"""The deletion gap: do the words an explanation ranks highest matter more to the model than words picked at random?

For each text: the drop in its explained label's log-odds when its k top-attributed words are deleted together,
minus the mean drop over `draws` sets of k words drawn at random from the same explained words. The mean of that
per-text gap, with a paired-bootstrap 95 % interval (texts resampled, each keeping its own pair of drops), is the
report's `explain_deletion_gap_k3`: a faithful explanation scores above 0, one no better than chance about 0.

Pure numpy over a `score(texts) -> probabilities` callable (`textclf.inference.explain.Score`): the report passes the
served classifier's scores, the tests a fake model. It imports only the core, so it can move to whichever stage runs
the measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from textclf.inference.explain import DEFAULT_MAX_WORDS, Score, Word, plan_explanations, without_words

logger = logging.getLogger(__name__)

# Probabilities are clipped this far from 0 and 1 before taking log-odds: a saturated float32 softmax would
# otherwise give an infinite drop, and one such text would decide the mean.
_LOG_ODDS_EPS = 1e-7


@dataclass(frozen=True)
class DeletionGap:
    """The deletion gap at k over the measured texts, with its paired-bootstrap interval."""

    mean: float  # mean over texts of (top-k drop − mean random-k drop), in log-odds
    low: float  # the interval's lower end (the (1 − confidence)/2 quantile of the bootstrap means)
    high: float  # and its upper end
    mean_top_drop: float  # mean drop in the label's log-odds with the top-k words deleted
    mean_random_drop: float  # the same with k random explained words deleted (mean over draws, then texts)
    texts: int  # texts measured
    skipped: int  # texts with no predicted label or at most k explained words (top and random sets would coincide)
    k: int
    draws: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        """A flat JSON-ready record for the report."""
        return asdict(self)


def log_odds(probabilities: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)), with p clipped into [eps, 1 − eps]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _LOG_ODDS_EPS, 1.0 - _LOG_ODDS_EPS)
    result: np.ndarray = np.log(p) - np.log1p(-p)
    return result


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, resamples: int = 2000, confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` (one value per text, so resampling texts keeps each
    text's top and random drops paired).

    Raises:
        ValueError: no values, fewer than one resample, or a confidence outside (0, 1).
    """
    if len(values) == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"resamples must be ≥ 1 and confidence in (0, 1), got {resamples} and {confidence}")
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = np.asarray(values, dtype=np.float64)[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def deletion_gap(
    texts: Sequence[str],
    score: Score,
    tokenizer: Tokenizer,
    *,
    threshold: float | None = None,
    k: int = 3,
    draws: int = 10,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    max_words: int = DEFAULT_MAX_WORDS,
) -> DeletionGap:
    """Measure the deletion gap at `k` on `texts` (the label measured: the text's best predicted label).

    Args:
        texts: the texts (the report: the test split's first 500).
        score: texts → (texts, labels) probabilities.
        tokenizer: the model's tokenizer (its words are what gets deleted).
        threshold: a multi-label model's threshold; None for a single-label model.
        k: words deleted together.
        draws: random k-word sets per text.
        resamples: bootstrap resamples.
        confidence: the interval's coverage.
        seed: seeds the random words and the bootstrap, so a run repeats exactly.
        max_words: words explained per text, as served.

    Raises:
        ValueError: `k` or `draws` not positive, or no text with a predicted label and more than `k` words.
    """
    if k < 1 or draws < 1:
        raise ValueError(f"k and draws must be positive integers, got {k} and {draws}")
    rng = np.random.default_rng(seed)
    plan = plan_explanations(tokenizer, texts, max_words)
    scores = np.asarray(score([*texts, *plan.texts]))
    original = scores[: len(texts)]
    labels = [str(i) for i in range(original.shape[1])]  # explained by column index; names do not matter here
    explanations = plan.explanations(original, scores[len(texts) :], labels, threshold, top_k=k)

    measured: list[tuple[int, int]] = []  # (text index, label column)
    deleted: list[str] = []  # per measured text: its top-k deletion, then `draws` random-k deletions
    for i, (text, split, explanation) in enumerate(zip(texts, plan.splits, explanations, strict=True)):
        if not explanation.by_label or len(split.words) <= k:
            continue
        label, top = next(iter(explanation.by_label.items()))
        measured.append((i, int(label)))
        deleted.append(without_words(text, [Word(w["start"], w["end"], w["word"]) for w in top]))
        for _ in range(draws):
            picks = rng.choice(len(split.words), size=k, replace=False)
            deleted.append(without_words(text, [split.words[j] for j in picks]))
    if not measured:
        raise ValueError(f"no text has a predicted label and more than k={k} words; the deletion gap is undefined")

    after = np.asarray(score(deleted)).reshape(len(measured), 1 + draws, -1)
    rows, columns = np.array([i for i, _ in measured]), np.array([c for _, c in measured])
    before = log_odds(original[rows, columns])[:, None]
    drops = before - log_odds(after[np.arange(len(measured)), :, columns])  # (texts, 1 + draws)
    top_drop, random_drop = drops[:, 0], drops[:, 1:].mean(axis=1)
    gaps = top_drop - random_drop
    low, high = bootstrap_interval(gaps, rng, resamples, confidence)
    logger.info("deletion gap at k=%d over %d texts: %.4f [%.4f, %.4f]", k, len(measured), gaps.mean(), low, high)
    return DeletionGap(
        mean=float(gaps.mean()),
        low=low,
        high=high,
        mean_top_drop=float(top_drop.mean()),
        mean_random_drop=float(random_drop.mean()),
        texts=len(measured),
        skipped=len(texts) - len(measured),
        k=k,
        draws=draws,
        confidence=confidence,
    )
