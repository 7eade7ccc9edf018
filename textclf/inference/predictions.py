"""From logits to answers: probabilities (softmax, or a multi-label model's sigmoid per label) of the logits scaled
by the variant's fitted temperature, label sets at the model's threshold (or its per-label ones), whether an answer
abstains under the selective threshold, and the `Prediction` the service, bulk prediction and export's gates all
return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MULTI_LABEL = "multi_label_classification"  # config.json's problem_type of a model trained with BCE-with-logits
THRESHOLD_KEY = "textclf_threshold"  # config.json: train.threshold of a multi-label model
DEFAULT_THRESHOLD = 0.5

# A fitted temperature: one for every class, or (multi-label) one per label.
Temperature = float | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]
    truncated: bool = False
    labels: list[str] | None = None  # multi-label: every label at or over the threshold, best first
    chunks: int | None = None  # on_overlength=chunk: the windows of max_seq_len tokens the text was read in
    # A selective threshold in force: whether the top label's probability fell under it (label and scores stay, the
    # client decides); None where no threshold is in force.
    abstained: bool | None = None
    # Asked for (`explain`): per explained label its strongest words, and how many of the text's words it covers.
    explanation: dict[str, list[dict[str, Any]]] | None = None
    explained_words: int | None = None
    total_words: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of one prediction, the service's and bulk output's alike: `labels` only for a multi-label
        model, `truncated` only where the text was cut, `chunks` only where the text was read in windows,
        `abstained` only where a selective threshold is in force, `explanation` (with `explained_words` and
        `total_words`) only where one was asked for."""
        out: dict[str, Any] = {"label": self.label, "score": self.score, "scores": self.scores}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.truncated:
            out["truncated"] = True
        if self.chunks is not None:
            out["chunks"] = self.chunks
        if self.abstained is not None:
            out["abstained"] = self.abstained
        if self.explanation is not None:
            out["explanation"] = self.explanation
            out["explained_words"] = self.explained_words
            out["total_words"] = self.total_words
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


def over_threshold(probabilities: np.ndarray, threshold: float | Sequence[float]) -> np.ndarray:
    """Multi-label: which labels a row predicts, as a boolean matrix (the one comparison train, export's gates and
    the service all use); `threshold` is the model's one, or one per label."""
    result: np.ndarray = probabilities >= threshold
    return result


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax over the classes, or for a multi-label model each label's own sigmoid."""
    return sigmoid(logits) if multi_label else softmax(logits)


def scale_logits(logits: np.ndarray, temperature: Temperature | None) -> np.ndarray:
    """Logits divided by the temperature: one for every class, or (multi-label) one per label, on the last axis.

    Args:
        logits: (texts, labels) raw logits.
        temperature: None (raw scores), a positive number, or one positive number per label.

    Raises:
        ValueError: a temperature that is not positive, or a per-label one whose length is not the label count.
    """
    values = np.asarray(logits, dtype=np.float64)
    if temperature is None:
        return values
    scale = np.asarray(temperature, dtype=np.float64)
    if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] != values.shape[-1]):
        raise ValueError(f"temperature: expected one value or {values.shape[-1]} (one per label), got {scale.shape}")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"temperature must be positive and finite, got {scale.tolist()}")
    result: np.ndarray = values / scale
    return result


def calibrated_probabilities(logits: np.ndarray, temperature: Temperature | None, multi_label: bool) -> np.ndarray:
    """Softmax (multi-label: each label's sigmoid) of the temperature-scaled logits: the scores a variant serves."""
    if temperature is None:  # raw scores in the logits' own precision, as every variant served them before
        return probabilities(logits, multi_label)
    return probabilities(scale_logits(logits, temperature), multi_label)


def label_sets(probabilities: np.ndarray, labels: list[str], threshold: float | Sequence[float]) -> list[list[str]]:
    """Multi-label: each row's labels at or over the threshold (the model's one, or one per label), best first
    (possibly none)."""
    sets = []
    for row, chosen in zip(probabilities, over_threshold(probabilities, threshold), strict=True):
        ranked = np.argsort(-row, kind="stable")
        sets.append([labels[i] for i in ranked if chosen[i]])
    return sets


def predictions(
    logits: np.ndarray,
    truncated: list[bool],
    labels: list[str],
    threshold: float | Sequence[float] | None,
    *,
    top_k: int | None = None,
    raw_scores: bool = False,
    chunks: list[int] | None = None,
    temperature: Temperature | None = None,
    min_confidence: float | None = None,
) -> list[Prediction]:
    """Each row's best label and its classes' scores (multi-label, `threshold` set: also its label set; read in
    windows, `chunks` given: the number of windows of each row).

    Args:
        threshold: None for a single-label model; a multi-label model's threshold, or one per label.
        raw_scores: scores are the logits themselves (label, label set and abstention still come from the
            calibrated probabilities).
        temperature: the variant's fitted temperature (one, or one per label); None: probabilities of the raw
            logits.
        min_confidence: single-label: each prediction says whether its top probability falls under this
            (`abstained`); None: no prediction carries `abstained`.

    Raises:
        ValueError: `min_confidence` for a multi-label model (a label set has no single confidence).
    """
    multi_label = threshold is not None
    if multi_label and min_confidence is not None:
        raise ValueError("min_confidence: a multi-label model has no single confidence per text to abstain on")
    probs = calibrated_probabilities(logits, temperature, multi_label)
    values = logits if raw_scores else probs
    sets: list[list[str] | None] = [None] * len(values)
    if threshold is not None:
        sets = list(label_sets(probs, labels, threshold))
    abstain: list[bool | None] = [None] * len(values)
    if min_confidence is not None and len(probs):
        abstain = (probs.max(axis=1) < min_confidence).tolist()
    k = None if top_k is None else min(top_k, len(labels))
    windows: list[int | None] = list(chunks) if chunks is not None else [None] * len(values)
    out = []
    for row, was_truncated, chosen, count, abstained in zip(values, truncated, sets, windows, abstain, strict=True):
        best = int(row.argmax())
        if k is None:
            scores = {label: float(v) for label, v in zip(labels, row, strict=True)}
        else:
            ranked = np.argsort(-row, kind="stable")[:k]
            scores = {labels[i]: float(row[i]) for i in ranked}
        out.append(Prediction(labels[best], float(row[best]), scores, was_truncated, chosen, count, abstained))
    return out
