"""Export's gates (numpy, so the runtime side needs no scikit-learn) and training's metrics (scikit-learn) are two
implementations of the same numbers: this holds them equal, so a model judged at export scores as it trained."""

from __future__ import annotations

import numpy as np
import pytest

from textclf_export.gates import scores_from_logits
from textclf_train.metrics import full_metrics, multi_label_metrics


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_labels", [2, 5])
def test_single_label_accuracy_and_macro_f1_agree(seed: int, num_labels: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(200, num_labels)).astype(np.float32)
    labels = rng.integers(0, num_labels, size=200)
    labels[:20] = 0  # a class that is never predicted right still counts in the macro mean
    gates = scores_from_logits(logits, labels.tolist(), threshold=None)
    trained = full_metrics(labels, logits.argmax(axis=-1), [f"c{i}" for i in range(num_labels)])
    assert gates.accuracy == pytest.approx(trained["accuracy"], abs=1e-12)
    assert gates.macro_f1 == pytest.approx(trained["macro_f1"], abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_multi_label_exact_match_macro_and_micro_f1_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(150, 4)).astype(np.float32)
    truth = rng.random(size=(150, 4)) < 0.35
    truth[:, 3] = False  # a label with no positives: F1 0 by both (zero_division=0)
    labels = [np.flatnonzero(row).tolist() for row in truth]
    gates = scores_from_logits(logits, labels, threshold=0.6)
    trained = multi_label_metrics(truth.astype(np.float32), logits, 0.6, ["a", "b", "c", "d"])
    assert gates.accuracy == pytest.approx(trained["accuracy"], abs=1e-12)
    assert gates.macro_f1 == pytest.approx(trained["macro_f1"], abs=1e-12)
    assert gates.micro_f1 == pytest.approx(trained["micro_f1"], abs=1e-12)
