"""The texts the gates judge on: the test split (labels mapped to the checkpoint's ids) and calibration texts."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from textclf.artifacts.schema import TrainSection
from textclf.config import Config, DataConfig
from textclf.errors import DataError
from textclf.inference.predictions import multi_label_threshold
from textclf_export.gates import TestLabel

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    test_texts: list[str]
    test_labels: list[TestLabel]  # the checkpoint's class ids (multi-label: a list of them per text)
    calibration_texts: list[str]
    source: dict[str, Any]


def _checkpoint_config(checkpoint: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((checkpoint / "config.json").read_text())
    return config


def checkpoint_labels(checkpoint: Path) -> list[str]:
    id2label = _checkpoint_config(checkpoint).get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))]


def checkpoint_threshold(checkpoint: Path) -> float | None:
    """A multi-label checkpoint's threshold (saved by train; 0.5 for an outside one), None for single-label."""
    return multi_label_threshold(_checkpoint_config(checkpoint))


class LabelledSplits(Protocol):
    """What export reads of the train stage's loaded data (`textclf_train.data.LabelledData`)."""

    splits: Any  # a datasets.DatasetDict with `text` and `label` columns
    label_names: list[str]
    source: dict[str, Any]
    split_sha256: dict[str, str]
    multi_label: bool


DataLoader = Callable[[DataConfig], LabelledSplits]


def load_eval_data(cfg: Config, train: TrainSection | None, checkpoint: Path, load_data: DataLoader) -> EvalData:
    """Rebuild the train stage's splits (from the data config it recorded in `train`) or read `cfg.data` for an
    outside checkpoint (`train` None), and check the labels match the checkpoint's `id2label`.
    """
    data_cfg = DataConfig.model_validate(train.data.config) if train else cfg.data
    data = load_data(data_cfg)
    if train:
        recorded = train.data.splits.get("test")
        if recorded is None or data.split_sha256["test"] != recorded.sha256:
            raise DataError(
                "the test split rebuilt from the recorded data config differs from the one the model was trained "
                "and judged on (did the data file change?)"
            )
    model_labels = checkpoint_labels(checkpoint)
    model_is_multi_label = checkpoint_threshold(checkpoint) is not None
    if model_is_multi_label != data.multi_label:
        raise DataError(
            f"the checkpoint is a {'multi' if model_is_multi_label else 'single'}-label classifier but the data "
            f"config says data.multi_label={str(data_cfg.multi_label).lower()}"
        )
    if sorted(model_labels) != sorted(data.label_names):
        raise DataError(
            f"the data's labels {data.label_names} do not match the checkpoint's id2label {model_labels}; "
            "set data.path to the data set this model classifies"
        )
    to_model_id = {name: model_labels.index(name) for name in data.label_names}
    test = data.splits["test"]
    labels: list[TestLabel]
    if data.multi_label:
        labels = [sorted(to_model_id[data.label_names[i]] for i in ids) for ids in test["label"]]
    else:
        labels = [to_model_id[data.label_names[i]] for i in test["label"]]
    train_split = data.splits["train"].shuffle(seed=cfg.data.split_seed)
    calibration = train_split.select(range(min(cfg.export.calibration_samples, train_split.num_rows)))
    return EvalData(list(test["text"]), labels, list(calibration["text"]), data.source)
