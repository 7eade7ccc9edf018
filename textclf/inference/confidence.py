"""Confidence at serve time, numpy only: what a loaded variant serves with (`ServedConfidence`: its fitted
temperature and per-label thresholds, checked against the model), the selective threshold resolved from
`serve.min_confidence` / `serve.target_accuracy` (and a request's own `min_confidence`), and which answers abstain.
The temperature itself is applied where every prediction is made (`textclf.inference.predictions`).

Export fits the temperature and records the validation risk–coverage curve (`textclf.artifacts.confidence`); this
module only reads that record, so the service needs neither the data nor scipy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from textclf.artifacts.confidence import ConfidenceRecord, CurvePoint
from textclf.errors import ArtifactError, ConfigError, RequestError
from textclf.inference.predictions import Temperature as Temperature
from textclf.inference.predictions import calibrated_probabilities as calibrated_probabilities
from textclf.inference.predictions import scale_logits as scale_logits

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectiveThreshold:
    """The confidence under which a served answer is marked `abstained`, and where it came from."""

    threshold: float
    source: Literal["min_confidence", "target_accuracy"]
    target_accuracy: float | None = None
    validation_coverage: float | None = None  # target_accuracy: the share of validation texts it answers
    validation_accuracy: float | None = None  # target_accuracy: their accuracy

    def describe(self) -> dict[str, Any]:
        """The JSON shape `GET /model` and the start-up log name the threshold in force with."""
        out: dict[str, Any] = {"min_confidence": self.threshold, "source": self.source}
        if self.target_accuracy is not None:
            out |= {
                "target_accuracy": self.target_accuracy,
                "validation_coverage": self.validation_coverage,
                "validation_accuracy": self.validation_accuracy,
            }
        return out


def threshold_for_accuracy(curve: Sequence[CurvePoint], target_accuracy: float) -> CurvePoint:
    """The lowest curve threshold t such that accuracy on the texts scoring ≥ t′ reaches the target for every
    curve threshold t′ ≥ t (points where no text remains are left out).

    The 'every t′ ≥ t' condition keeps a dip in accuracy above t from hiding behind a good average: answering
    more texts never buys back a band of confident mistakes.

    Raises:
        ConfigError: no threshold satisfies the rule; the message names the best reachable accuracy (that of the
            highest threshold, which every t must include), with its threshold and coverage.
    """
    points = sorted((p for p in curve if p.accuracy is not None), key=lambda p: p.threshold)
    if not points:
        raise ConfigError("target_accuracy: the validation risk–coverage curve is empty (nothing to resolve it on)")
    # Every t′ above the highest point's threshold is the point itself, so its accuracy caps what any t can reach.
    top = points[-1]
    if top.accuracy is None or top.accuracy < target_accuracy:
        raise ConfigError(
            f"target_accuracy {target_accuracy} is not reached on validation at any confidence threshold: the best "
            f"reachable is {top.accuracy:.4f} (threshold {top.threshold:.4f}, coverage {top.coverage:.3f})"
        )
    chosen = top
    for point in reversed(points[:-1]):
        if point.accuracy is None or point.accuracy < target_accuracy:
            break  # this t′ fails, so no lower t can satisfy 'every t′ ≥ t'
        chosen = point
    return chosen


def resolve_threshold(
    record: ConfidenceRecord | None,
    *,
    min_confidence: float | None,
    target_accuracy: float | None,
    multi_label: bool,
) -> SelectiveThreshold | None:
    """The deploy's selective threshold from `serve.min_confidence` or `serve.target_accuracy`, or None (every answer
    is given).

    Args:
        record: the served variant's confidence record (None: an export before confidence was fitted).
        min_confidence: a threshold on the served top-label score, in [0, 1].
        target_accuracy: the validation accuracy the answered texts must reach, in (0, 1].
        multi_label: whether the model is multi-label (a label set has no single confidence: both are refused).

    Raises:
        ConfigError: both set; either set for a multi-label model; a value out of range; a target with no fitted
            curve to resolve it on, or one the curve does not reach (the best reachable named).
    """
    if min_confidence is None and target_accuracy is None:
        return None
    if min_confidence is not None and target_accuracy is not None:
        raise ConfigError("serve.min_confidence and serve.target_accuracy are both set; set at most one")
    if multi_label:
        name = "serve.min_confidence" if min_confidence is not None else "serve.target_accuracy"
        raise ConfigError(f"{name}: a multi-label model has no single confidence per text to abstain on; unset it")
    if min_confidence is not None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"serve.min_confidence must be in [0, 1], got {min_confidence}")
        return SelectiveThreshold(float(min_confidence), "min_confidence")
    assert target_accuracy is not None  # the branches above leave only this case
    if not 0.0 < target_accuracy <= 1.0:
        raise ConfigError(f"serve.target_accuracy must be in (0, 1], got {target_accuracy}")
    if record is None or not record.is_fitted:
        why = "export recorded no confidence" if record is None else f"skipped: {record.skipped_reason}"
        raise ConfigError(f"serve.target_accuracy needs the variant's fitted confidence ({why}); re-export it")
    try:
        point = threshold_for_accuracy(record.validation_curve, target_accuracy)
    except ConfigError as exc:
        raise ConfigError(f"serve.{exc}") from None
    logger.info(
        "target accuracy %s: abstaining under confidence %.4f (validation coverage %.3f, accuracy %.4f)",
        target_accuracy,
        point.threshold,
        point.coverage,
        point.accuracy,
    )
    return SelectiveThreshold(point.threshold, "target_accuracy", target_accuracy, point.coverage, point.accuracy)


def request_threshold(
    request_min_confidence: Any, served: SelectiveThreshold | None, *, multi_label: bool
) -> float | None:
    """The threshold one request is answered with: its own `min_confidence` where it sends one, else the deploy's.

    Raises:
        RequestError: (invalid_request) a value that is not a number in [0, 1], or any for a multi-label model.
    """
    if request_min_confidence is None:
        return served.threshold if served is not None else None
    is_number = isinstance(request_min_confidence, int | float) and not isinstance(request_min_confidence, bool)
    if not is_number or not 0.0 <= float(request_min_confidence) <= 1.0:
        raise RequestError(
            "invalid_request", f"min_confidence must be a number in [0, 1], got {request_min_confidence!r}"
        )
    if multi_label:
        raise RequestError("invalid_request", "min_confidence: a multi-label model has no single confidence per text")
    return float(request_min_confidence)


def abstained(scores: np.ndarray | Sequence[float], threshold: float | None) -> np.ndarray:
    """Per prediction, whether its top-label score falls under the threshold (None: nothing abstains)."""
    values = np.asarray(scores, dtype=np.float64)
    if threshold is None:
        return np.zeros(values.shape, dtype=bool)
    result: np.ndarray = values < threshold
    return result


@dataclass(frozen=True)
class ServedConfidence:
    """What a loaded variant applies to its logits (`temperature`, multi-label `label_thresholds`) and the deploy's
    selective threshold (`selective`); all None: raw scores at the model's one threshold, no answer abstains."""

    temperature: float | list[float] | None = None
    label_thresholds: list[float] | None = None
    selective: SelectiveThreshold | None = None

    @classmethod
    def load(
        cls,
        record: ConfidenceRecord | None,
        labels: Sequence[str],
        multi_label: bool,
        min_confidence: float | None = None,
        target_accuracy: float | None = None,
        variant: str = "",
    ) -> ServedConfidence:
        """Check the variant's record against its model, say once what it serves with, and resolve the deploy's
        threshold (`resolve_threshold`).

        Raises:
            ArtifactError: a temperature or thresholds that do not fit the model (a number for a single-label
                model, one per label for a multi-label one).
            ConfigError: the selective settings `resolve_threshold` refuses.
        """
        if record is None:
            logger.info("%s: export fitted no confidence (fit_confidence off, or an older export): raw scores", variant)
        elif not record.is_fitted:
            logger.warning("%s: confidence skipped at export (%s): serving raw scores", variant, record.skipped_reason)
        selective = resolve_threshold(
            record, min_confidence=min_confidence, target_accuracy=target_accuracy, multi_label=multi_label
        )
        if record is None or not record.is_fitted:
            return cls(selective=selective)
        temperature = record.temperature
        per_label = isinstance(temperature, list)
        if per_label != multi_label or (isinstance(temperature, list) and len(temperature) != len(labels)):
            want = f"one per label ({len(labels)})" if multi_label else "one number"
            raise ArtifactError(
                f"{variant}: the recorded temperature {temperature} does not fit the model: want {want}"
            )
        if record.thresholds is not None and (not multi_label or len(record.thresholds) != len(labels)):
            raise ArtifactError(f"{variant}: the recorded thresholds {record.thresholds} are not one per label")
        extra = f", per-label thresholds {record.thresholds}" if record.thresholds is not None else ""
        logger.info("%s: calibrated scores, temperature %s%s", variant, temperature, extra)
        return cls(temperature, record.thresholds, selective)
