"""The gates every variant must pass: parity with PyTorch, accuracy, batch invariance."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from textclf.runtime import Classifier, softmax
from textclf.schema import BatchInvariance


def parity(classifier: Classifier, texts: list[str], reference: np.ndarray) -> float:
    """Max |Δ logit| between the variant and PyTorch on the same texts."""
    logits, _ = classifier.logits(texts, batch_size=32)
    return float(np.abs(logits - reference).max())


def accuracy(classifier: Classifier, texts: list[str], labels: list[int]) -> tuple[float, float]:
    """Test accuracy and macro-F1 (without scikit-learn: the runtime side stays light)."""
    logits, _ = classifier.logits(texts, batch_size=32)
    return accuracy_from_logits(logits, labels, len(classifier.labels))


def accuracy_from_logits(logits: np.ndarray, labels: list[int], num_labels: int) -> tuple[float, float]:
    preds = logits.argmax(axis=-1)
    truth = np.asarray(labels)
    f1s = []
    for cls in range(num_labels):
        tp = int(((preds == cls) & (truth == cls)).sum())
        fp = int(((preds == cls) & (truth != cls)).sum())
        fn = int(((preds != cls) & (truth == cls)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float((preds == truth).mean()), float(np.mean(f1s))


def batch_invariance(classifier: Classifier, texts: list[str], batch_size: int = 32, seed: int = 0) -> BatchInvariance:
    """Label flips between each text run alone and run inside a padded batch of mixed lengths.

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
    flips = int((alone.argmax(axis=-1) != batched.argmax(axis=-1)).sum())
    max_prob_change = float(np.abs(softmax(alone) - softmax(batched)).max())
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
