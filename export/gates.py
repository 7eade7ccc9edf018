"""The gates every variant must pass: parity with PyTorch, the test metric, batch invariance.

Single-label models are judged on accuracy and argmax flips; multi-label models on micro-F1 at the model's threshold
and on label-set changes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from textclf.artifacts.schema import BatchInvariance
from textclf.inference.predictions import over_threshold, sigmoid
from textclf.inference.runtime import Classifier

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


def metric_scores(classifier: Classifier, texts: list[str], labels: list[TestLabel]) -> MetricScores:
    """The variant's test metrics (numpy only: the runtime side stays free of scikit-learn)."""
    logits, _ = classifier.logits(texts, batch_size=32)
    return scores_from_logits(logits, labels, classifier.threshold)


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


@dataclass(frozen=True)
class Timing:
    """The export-time timing recorded on a variant (same names as its manifest fields)."""

    latency_ms: float
    batch32_ms_per_text: float
    samples_b1: int
    samples_b32: int


def time_variant(classifier: Classifier, texts: list[str], seconds: float) -> Timing:
    """A short timing at the data's real lengths: p50 latency at batch 1 and per-text time at batch 32."""

    def measure(batch: int, budget: float) -> list[float]:
        samples: list[float] = []
        deadline = time.perf_counter() + budget
        i = 0
        classifier.predict(texts[:batch])  # warm-up
        while time.perf_counter() < deadline or len(samples) < 3:
            chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
            started = time.perf_counter()
            classifier.predict(chunk)
            samples.append((time.perf_counter() - started) * 1000)
            i += batch
        return samples

    b1 = measure(1, seconds / 2)
    b32 = measure(32, seconds / 2)
    return Timing(
        latency_ms=float(np.median(b1)),
        batch32_ms_per_text=float(np.median(b32) / 32),
        samples_b1=len(b1),
        samples_b32=len(b32),
    )
