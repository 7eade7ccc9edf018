"""Classification metrics recorded in the manifest, and the confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from textclf.artifacts.files import atomic_write_bytes
from textclf.inference.predictions import over_threshold, sigmoid


def trainer_metrics(eval_pred: Any) -> dict[str, float]:
    """`compute_metrics` for the Trainer: accuracy and macro-F1 (the model-selection metric)."""
    logits, labels = eval_pred
    preds = np.asarray(logits).argmax(axis=-1)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
    }


def multi_label_trainer_metrics(threshold: float) -> Any:
    """`compute_metrics` for a multi-label Trainer: exact-match accuracy, macro- and micro-F1 at `threshold`."""

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, targets = eval_pred
        return _multi_label_scores(*_multi_label_sets(targets, logits, threshold))

    return compute


def _multi_label_sets(targets: Any, logits: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) label sets as boolean matrices: multi-hot targets, and the runtime's sigmoid ≥ threshold."""
    return np.asarray(targets) >= 0.5, over_threshold(sigmoid(np.asarray(logits)), threshold)


def _multi_label_scores(truth: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(truth, preds)),
        "macro_f1": float(f1_score(truth, preds, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(truth, preds, average="micro", zero_division=0)),
    }


def multi_label_metrics(
    targets: np.ndarray, logits: np.ndarray, threshold: float, label_names: list[str]
) -> dict[str, Any]:
    """Exact-match accuracy, macro/micro-F1 and per-label precision/recall/F1/support at `threshold`."""
    truth, preds = _multi_label_sets(targets, logits, threshold)
    precision, recall, f1, support = precision_recall_fscore_support(truth, preds, zero_division=0)
    return _multi_label_scores(truth, preds) | {
        "threshold": threshold,
        "n": len(truth),
        "per_class": _per_class(label_names, precision, recall, f1, support),
        "confusion_matrix": None,
    }


def _per_class(label_names: list[str], *columns: np.ndarray) -> dict[str, dict[str, Any]]:
    precision, recall, f1, support = columns
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }


def full_metrics(labels: np.ndarray, preds: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    indices = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=indices, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=indices, average="macro", zero_division=0)),
        "n": len(labels),
        "per_class": _per_class(label_names, precision, recall, f1, support),
        "confusion_matrix": confusion_matrix(labels, preds, labels=indices).tolist(),
    }


def plot_confusion_matrix(matrix: list[list[int]], label_names: list[str], path: Path, title: str) -> None:
    """Write the confusion matrix as a PNG (atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    values = np.asarray(matrix)
    size = max(3.5, 0.6 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = values.max() / 2 if values.size else 0
    for (row, col), count in np.ndenumerate(values):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
