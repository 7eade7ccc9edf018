"""From logits to answers: probabilities (softmax, or a multi-label model's sigmoid per label), label sets at the
model's threshold, and the `Prediction` the service, bulk prediction and export's gates all return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MULTI_LABEL = "multi_label_classification"  # config.json's problem_type of a model trained with BCE-with-logits
THRESHOLD_KEY = "textclf_threshold"  # config.json: train.threshold of a multi-label model
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]
    truncated: bool = False
    labels: list[str] | None = None  # multi-label: every label at or over the threshold, best first
    chunks: int | None = None  # on_overlength=chunk: the windows of max_seq_len tokens the text was read in

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of one prediction, the service's and bulk output's alike: `labels` only for a multi-label
        model, `truncated` only where the text was cut, `chunks` only where the text was read in windows."""
        out: dict[str, Any] = {"label": self.label, "score": self.score, "scores": self.scores}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.truncated:
            out["truncated"] = True
        if self.chunks is not None:
            out["chunks"] = self.chunks
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function (each label's own probability in a multi-label model)."""
    result: np.ndarray = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return result.astype(np.float32)


def multi_label_threshold(config: Mapping[str, Any]) -> float | None:
    """A model config.json's threshold: train.threshold for a multi-label model (0.5 when an outside one has
    none), None for a single-label model."""
    if config.get("problem_type") != MULTI_LABEL:
        return None
    return float(config.get(THRESHOLD_KEY, DEFAULT_THRESHOLD))


def over_threshold(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Multi-label: which labels a row predicts, as a boolean matrix (the one comparison train, export's gates and
    the service all use)."""
    result: np.ndarray = probabilities >= threshold
    return result


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax over the classes, or for a multi-label model each label's own sigmoid."""
    return sigmoid(logits) if multi_label else softmax(logits)


def label_sets(probabilities: np.ndarray, labels: list[str], threshold: float) -> list[list[str]]:
    """Multi-label: each row's labels at or over the threshold, best first (possibly none)."""
    sets = []
    for row, chosen in zip(probabilities, over_threshold(probabilities, threshold), strict=True):
        ranked = np.argsort(-row, kind="stable")
        sets.append([labels[i] for i in ranked if chosen[i]])
    return sets


def predictions(
    logits: np.ndarray,
    truncated: list[bool],
    labels: list[str],
    threshold: float | None,
    *,
    top_k: int | None = None,
    raw_scores: bool = False,
    chunks: list[int] | None = None,
) -> list[Prediction]:
    """Each row's best label and its classes' scores (multi-label, `threshold` set: also its label set; read in
    windows, `chunks` given: the number of windows of each row)."""
    probs = probabilities(logits, threshold is not None)
    values = logits if raw_scores else probs
    sets: list[list[str] | None] = [None] * len(values)
    if threshold is not None:
        sets = list(label_sets(probs, labels, threshold))
    k = None if top_k is None else min(top_k, len(labels))
    windows: list[int | None] = list(chunks) if chunks is not None else [None] * len(values)
    out = []
    for row, was_truncated, chosen, count in zip(values, truncated, sets, windows, strict=True):
        best = int(row.argmax())
        if k is None:
            scores = {label: float(v) for label, v in zip(labels, row, strict=True)}
        else:
            ranked = np.argsort(-row, kind="stable")[:k]
            scores = {labels[i]: float(row[i]) for i in ranked}
        out.append(Prediction(labels[best], float(row[best]), scores, was_truncated, chosen, count))
    return out
