"""The manifest record of a variant's confidence: what export fitted on the validation split (a temperature, or one
per label, and optional per-label thresholds), what it measured on the test split before and after, and the
validation risk–coverage curve the service resolves `serve.target_accuracy` from without the data.

It sits at `export.variants.<name>.confidence`; the runtime reads it through `textclf.inference.confidence`.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, model_validator

from textclf.artifacts.records import Record

logger = logging.getLogger(__name__)

ECE_BINS = 15  # equal-width bins of the top-label confidence, the convention the issue and the report quote


class CurvePoint(Record):
    """One point of a risk–coverage curve: the texts whose top-label confidence is ≥ `threshold`."""

    threshold: float = Field(ge=0, le=1)
    coverage: float = Field(ge=0, le=1, description="the share of texts answered at this threshold")
    accuracy: float | None = Field(
        None, ge=0, le=1, description="accuracy on the answered texts; none where no text scores that high"
    )


class Interval(Record):
    """A 95 % paired-bootstrap interval of (after − before): below 0 throughout means 'lower after'."""

    low: float
    high: float


class ReliabilityBin(Record):
    """One equal-width confidence bin: how many texts fell in it, their mean confidence and their accuracy."""

    lower: float = Field(ge=0, le=1)
    upper: float = Field(ge=0, le=1)
    count: int = Field(ge=0, description="multi-label: (text, label) pairs")
    mean_confidence: float | None = Field(None, description="none for an empty bin")
    accuracy: float | None = Field(None, description="none for an empty bin")


class ConfidenceTest(Record):
    """The test split's calibration metrics with raw scores (before) and with the fitted confidence (after).

    Single-label: ECE on the top-label confidence, NLL of the true class, multi-class Brier (the sum over classes
    of the squared error, averaged over texts). Multi-label: each (text, label) pair is one binary decision; ECE
    on max(p, 1 − p), NLL and Brier averaged per label.
    """

    texts: int = Field(ge=1)
    ece_bins: int = ECE_BINS
    bootstrap_resamples: int = Field(ge=1)
    ece_before: float
    ece_after: float
    ece_delta_ci95: Interval
    nll_before: float
    nll_after: float
    nll_delta_ci95: Interval
    brier_before: float
    brier_after: float
    brier_delta_ci95: Interval
    reliability_before: list[ReliabilityBin] = Field(default_factory=list)
    reliability_after: list[ReliabilityBin] = Field(default_factory=list)


class LabelThresholdsF1(Record):
    """Multi-label: the test split's macro-F1 of the calibrated scores at the model's one threshold and at per-label
    F1-best thresholds fitted on validation, both measured whichever `export.multi_label_thresholds` serves."""

    served: Literal["fixed", "per_label"]
    fixed_threshold: float = Field(gt=0, lt=1)
    macro_f1_fixed: float = Field(ge=0, le=1)
    per_label_thresholds: list[float] = Field(description="fitted on validation, one per label, in label order")
    macro_f1_per_label: float = Field(ge=0, le=1)


class ConfidenceRecord(Record):
    """`export.variants.<name>.confidence`: fitted on validation, measured on test.

    Skipped (`skipped_reason` set) → `temperature` None and the variant serves raw scores.
    """

    temperature: float | list[float] | None = Field(
        None, description="single-label: one; multi-label: one per label, in label order; none when skipped"
    )
    thresholds: list[float] | None = Field(
        None, description="multi-label with per-label thresholds: one per label; none: the model's one threshold"
    )
    skipped_reason: str | None = None
    validation_texts: int = Field(ge=0)
    test: ConfidenceTest | None = None
    risk_coverage: list[CurvePoint] = Field(
        default_factory=list,
        description="on the test split, at thresholds chosen on validation (single-label only; empty otherwise)",
    )
    validation_curve: list[CurvePoint] = Field(
        default_factory=list,
        description="the same thresholds on validation: serve.target_accuracy is resolved from it at start",
    )
    label_thresholds_f1: LabelThresholdsF1 | None = Field(
        None, description="multi-label: test macro-F1 at the fixed threshold and at per-label ones (none otherwise)"
    )

    @model_validator(mode="after")
    def _fitted_or_skipped(self) -> ConfidenceRecord:
        # A record with neither a temperature nor a reason would serve raw scores without saying why.
        if (self.temperature is None) == (self.skipped_reason is None):
            raise ValueError("exactly one of temperature and skipped_reason must be set")
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether the variant serves calibrated scores (False: skipped, raw scores)."""
        return self.temperature is not None
