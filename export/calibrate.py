"""Each passing variant's confidence at export: fitted on that variant's own logits on the validation split (a deploy
may serve any shipped variant, and int8 logits are not fp32's), measured on the test logits its gates computed.

One extra inference pass a variant, over the validation texts in batches of 32 as the gates run the test texts. The
fitting and the metrics are `textclf_export.confidence`'s; this module only feeds them and says what came out.
"""

from __future__ import annotations

import logging

import numpy as np

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.config import ExportConfig
from textclf.inference.runtime import Classifier
from textclf_export.confidence import MIN_VALIDATION_TEXTS, fit_confidence, skipped_record
from textclf_export.evaldata import EvalData
from textclf_export.gates import TestLabel, multi_hot

logger = logging.getLogger(__name__)

BATCH_TEXTS = 32  # texts per call of the validation pass: the gates' batch on the test texts


def truth_of(labels: list[TestLabel], num_labels: int, multi_label: bool) -> np.ndarray:
    """What `fit_confidence` takes as labels: class ids (texts,), or a multi-label model's (texts, labels) 0/1."""
    if multi_label:
        return multi_hot(labels, num_labels).astype(np.int64)
    return np.asarray(labels, dtype=np.int64)


def variant_confidence(
    name: str, classifier: Classifier, test_logits: np.ndarray, data: EvalData, cfg: ExportConfig
) -> ConfidenceRecord | None:
    """The confidence record of one passing variant, or None where `export.fit_confidence` is off.

    Args:
        name: the variant, for the log.
        classifier: the variant as judged (raw logits: a folder loaded without a record applies no temperature).
        test_logits: its logits on `data.test_texts`, in order (the gates' own; only reported on, never fitted).
        data: the splits; confidence is fitted on `data.validation_texts`.
        cfg: `export.fit_confidence` and `export.multi_label_thresholds`.

    Returns:
        The fitted record; a skipped one, with its reason, under `MIN_VALIDATION_TEXTS` validation texts (no
        inference is spent on it).
    """
    if not cfg.fit_confidence:
        return None
    texts = data.validation_texts
    if len(texts) < MIN_VALIDATION_TEXTS:
        return skipped_record(len(texts))
    logger.info("%s: fitting confidence on %d validation texts", name, len(texts))
    validation_logits, _ = classifier.logits(texts, batch_size=BATCH_TEXTS)
    count, multi_label = len(classifier.labels), classifier.multi_label
    record = fit_confidence(
        validation_logits,
        truth_of(data.validation_labels, count, multi_label),
        test_logits,
        truth_of(data.test_labels, count, multi_label),
        threshold=classifier.threshold,
        per_label_thresholds=cfg.multi_label_thresholds == "per_label",
    )
    test = record.test
    if test is not None:
        logger.info(
            "%s: temperature %s; test NLL %.4f -> %.4f (95%% interval of the change %+.4f..%+.4f), ECE %.4f -> %.4f",
            name,
            record.temperature,
            test.nll_before,
            test.nll_after,
            test.nll_delta_ci95.low,
            test.nll_delta_ci95.high,
            test.ece_before,
            test.ece_after,
        )
    return record
