"""The texts export reads: the test split the gates judge on and the validation split each variant's confidence is
fitted on (labels mapped to the checkpoint's ids), and int8 calibration texts from the train split."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # The split confidence is fitted on: never the test split, which only reports the fit.
    validation_texts: list[str] = field(default_factory=list)
    validation_labels: list[TestLabel] = field(default_factory=list)


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

    Raises:
        DataError: a rebuilt test or validation split differs from the one train recorded, or the data's labels
            (or its single/multi-label kind) differ from the checkpoint's.
    """
    data_cfg = DataConfig.model_validate(train.data.config) if train else cfg.data
    data = load_data(data_cfg)
    for split in ("test", "validation") if train else ():  # train records every split
        recorded = train.data.splits.get(split) if train else None
        if recorded is None or data.split_sha256[split] != recorded.sha256:
            raise DataError(
                f"the {split} split rebuilt from the recorded data config differs from the one the model was trained "
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

    def model_ids(split: Any) -> list[TestLabel]:
        if data.multi_label:
            return [sorted(to_model_id[data.label_names[i]] for i in ids) for ids in split["label"]]
        return [to_model_id[data.label_names[i]] for i in split["label"]]

    test, validation = data.splits["test"], data.splits["validation"]
    train_split = data.splits["train"].shuffle(seed=cfg.data.split_seed)
    calibration = train_split.select(range(min(cfg.export.calibration_samples, train_split.num_rows)))
    return EvalData(
        list(test["text"]),
        model_ids(test),
        list(calibration["text"]),
        data.source,
        list(validation["text"]),
        model_ids(validation),
    )
