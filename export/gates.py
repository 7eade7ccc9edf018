"""The gates every variant must pass: parity with PyTorch, the test metric, batch invariance; and the timing on
real texts that every passing CPU variant's serving cost comes from.

Single-label models are judged on accuracy and argmax flips; multi-label models on micro-F1 at the model's threshold
and on label-set changes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from textclf.artifacts.schema import BatchInvariance
from textclf.inference.predictions import over_threshold, sigmoid
from textclf.inference.runtime import Classifier, length_order
from textclf.inference.timing import ROUNDS, aa_spread, round_median, time_interleaved

logger = logging.getLogger(__name__)

# A test text's truth: a class id, or for a multi-label model the ids of its labels.
TestLabel = int | list[int]


@dataclass(frozen=True)
class MetricScores:
    """The test metrics of one set of logits (micro-F1 only for multi-label models)."""

    accuracy: float
    macro_f1: float
    micro_f1: float | None = None

    @property
    def gated(self) -> float:
        """What the metric gate compares: micro-F1 for multi-label, accuracy otherwise."""
        return self.micro_f1 if self.micro_f1 is not None else self.accuracy


def parity(classifier: Classifier, texts: list[str], reference: np.ndarray) -> float:
    """Max |Δ logit| between the variant and PyTorch on the same texts."""
    logits, _ = classifier.logits(texts, batch_size=32)
    return float(np.abs(logits - reference).max())


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    result: np.ndarray = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return result


def scores_from_logits(logits: np.ndarray, labels: list[TestLabel], threshold: float | None) -> MetricScores:
    """Accuracy and macro-F1 of argmax; with a `threshold` (multi-label), exact-match accuracy and macro/micro-F1
    of the label sets sigmoid ≥ threshold."""
    num_labels = logits.shape[1]
    if threshold is None:
        preds = np.eye(num_labels, dtype=bool)[logits.argmax(axis=-1)]
        truth = np.eye(num_labels, dtype=bool)[np.asarray(labels, dtype=np.int64)]
    else:
        preds = predicted_sets(logits, threshold)
        truth = multi_hot(labels, num_labels)
    tp = (preds & truth).sum(axis=0)
    fp = (preds & ~truth).sum(axis=0)
    fn = (~preds & truth).sum(axis=0)
    accuracy = float((preds == truth).all(axis=1).mean())
    macro_f1 = float(_f1(tp, fp, fn).mean())
    if threshold is None:
        return MetricScores(accuracy, macro_f1)
    return MetricScores(accuracy, macro_f1, float(_f1(tp.sum(), fp.sum(), fn.sum())))


def multi_hot(labels: list[TestLabel], num_labels: int) -> np.ndarray:
    rows = np.zeros((len(labels), num_labels), dtype=bool)
    for row, ids in enumerate(labels):
        rows[row, ids] = True
    return rows


def predicted_sets(logits: np.ndarray, threshold: float) -> np.ndarray:
    """Multi-label: which labels have sigmoid(logit) ≥ threshold, as a boolean matrix."""
    return over_threshold(sigmoid(logits), threshold)


def batch_invariance(classifier: Classifier, texts: list[str], batch_size: int = 32, seed: int = 0) -> BatchInvariance:
    """Label flips (multi-label: label-set changes) between each text run alone and inside a padded batch of mixed
    lengths.

    Batches are drawn in a shuffled order (not length-sorted) so most texts sit next to longer ones and
    carry padding, the case where per-batch activation scales (dynamic int8) can change a result.
    """
    alone = np.stack([classifier.logits([text])[0][0] for text in texts])
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    encodings = classifier.encode(texts)
    batched = np.empty_like(alone)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batched[chunk] = classifier.run_session(classifier.pad([encodings[i] for i in chunk]).inputs)
    if classifier.threshold is None:
        flips = int((alone.argmax(axis=-1) != batched.argmax(axis=-1)).sum())
    else:
        changed = predicted_sets(alone, classifier.threshold) != predicted_sets(batched, classifier.threshold)
        flips = int(changed.any(axis=1).sum())
    max_prob_change = float(np.abs(classifier.probabilities(alone) - classifier.probabilities(batched)).max())
    return BatchInvariance(texts=len(texts), batch_size=batch_size, flips=flips, max_prob_change=max_prob_change)


# The cases of a variant's serving cost, all on real test texts: texts one at a time at evenly spaced quantiles of
# the split's lengths, sorted batches of 32 (as the batcher and `textclf predict` sort them) evenly spaced along the
# length order, and long texts (test texts joined end to end, cut at max_seq_len tokens: full windows, one a call).
SINGLE_TEXTS = 16
SORTED_BATCH = 32
SORTED_BATCHES = 4
LONG_TEXTS = 8
CASES = ("b1", f"b{SORTED_BATCH}-sorted", "long")


@dataclass(frozen=True)
class Timing:
    """The export-time timing recorded on a variant (same names as its manifest fields): ms per text by case."""

    latency_ms: float
    batch32_ms_per_text: float
    long_ms_per_text: float


@dataclass(frozen=True)
class TimingRun:
    """One interleaved timing of every candidate variant and the A/A control (the first candidate again)."""

    timings: dict[str, Timing]
    control: str  # the name the first candidate was timed under a second time
    aa_spread_by_case: dict[str, float]
    ms_per_text: dict[str, dict[str, float]]  # case → name (candidates and control) → ms per text

    @property
    def aa_spread(self) -> float:
        """The run's noise floor: the largest of the cases' A/A spreads (a cost is a mean over them all)."""
        return max(self.aa_spread_by_case.values())


def _spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices evenly spaced over range(count) (each at the middle of its share), or all of them."""
    if count <= wanted:
        return list(range(count))
    return [int((k + 0.5) * count / wanted) for k in range(wanted)]


def long_texts(classifier: Classifier, texts: list[str], count: int = LONG_TEXTS) -> list[Any]:
    """`count` encodings of max_seq_len real tokens: consecutive test texts joined until they fill a window (the
    split read round again where it is shorter), each window starting where the one before stopped."""
    if not texts:
        raise ValueError("no texts to build long texts from")
    lengths = [len(e.ids) for e in classifier.encode(texts)]
    windows, position = [], 0
    for _ in range(count):
        parts: list[str] = []
        tokens = 0
        while tokens <= classifier.max_seq_len:  # one token past the window, so the cut falls inside real text
            parts.append(texts[position % len(texts)])
            tokens += max(1, lengths[position % len(texts)] - 2)  # without each text's own [CLS] and [SEP]
            position += 1
        windows.extend(classifier.encode([" ".join(parts)]))
    return windows


def timing_cases(classifier: Classifier, texts: list[str]) -> dict[str, list[list[Any]]]:
    """Per case (`CASES`), its calls, each a list of encoded texts in the order they are padded together."""
    encodings = classifier.encode(texts)
    by_length = length_order([len(e.ids) for e in encodings])
    singles = [[encodings[by_length[i]]] for i in _spread(len(by_length), SINGLE_TEXTS)]
    batches = [by_length[i : i + SORTED_BATCH] for i in range(0, len(by_length), SORTED_BATCH)]
    full = [b for b in batches if len(b) == SORTED_BATCH] or batches[:1]  # a split under 32 texts: all of it once
    sorted_calls = [[encodings[i] for i in full[k]] for k in _spread(len(full), SORTED_BATCHES)]
    return dict(zip(CASES, (singles, sorted_calls, [[e] for e in long_texts(classifier, texts)]), strict=True))


def _case_call(classifier: Classifier, calls: list[list[Any]]) -> Callable[[], None]:
    """One timed call of a case: every call of it in turn on `classifier`'s engine, padded beforehand."""
    inputs = [classifier.pad(call).inputs for call in calls]

    def run() -> None:
        for one in inputs:
            classifier.run_session(one)

    return run


def time_variants(classifiers: Mapping[str, Classifier], texts: list[str], seconds: float) -> TimingRun:
    """Every candidate's ms per text on each case, with `textclf.inference.timing.time_interleaved` (the variants
    take turns, round after round; a case's time is `round_median`, the median over its rounds), `seconds` per
    variant over the cases. The first candidate runs a second time under another name (the A/A control): how far
    its two readings differ is the noise floor the choice is judged against (`aa_spread`)."""
    first = next(iter(classifiers))
    control = f"{first} (A/A)"
    cases = timing_cases(classifiers[first], texts)
    ms: dict[str, dict[str, float]] = {}
    for case, calls in cases.items():
        runs = {name: _case_call(classifier, calls) for name, classifier in classifiers.items()}
        runs[control] = runs[first]
        samples = time_interleaved(runs, warmup=1, min_iters=ROUNDS, max_seconds=seconds / len(cases))
        count = sum(len(call) for call in calls)
        ms[case] = {name: round(round_median(rounds) / count, 5) for name, rounds in samples.items()}
        logger.info("%s (%d texts a round): %s ms per text", case, count, ms[case])
    spreads = {case: round(aa_spread(by_name[first], by_name[control]), 4) for case, by_name in ms.items()}
    timings = {name: Timing(*(ms[case][name] for case in CASES)) for name in classifiers}
    return TimingRun(timings, control, spreads, ms)
