"""The texts the gates judge on: the test split (labels mapped to the checkpoint's ids) and calibration texts."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.config import Config, DataConfig
from textclf.errors import DataError
from textclf.schema import TrainSection

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    test_texts: list[str]
    test_labels: list[int]
    calibration_texts: list[str]
    source: dict[str, Any]


def checkpoint_labels(checkpoint: Path) -> list[str]:
    config = json.loads((checkpoint / "config.json").read_text())
    id2label = config.get("id2label") or {}
    return [id2label[str(i)] for i in range(len(id2label))]


def load_eval_data(cfg: Config, train: TrainSection | None, checkpoint: Path) -> EvalData:
    """Rebuild the train stage's splits (from the data config it recorded in `train`) or read `cfg.data` for an
    outside checkpoint (`train` None), and check the labels match the checkpoint's `id2label`.
    """
    from train.data import load_labelled_data

    data_cfg = DataConfig.model_validate(train.data.config) if train else cfg.data
    data = load_labelled_data(data_cfg)
    if train:
        recorded = train.data.splits.get("test")
        if recorded is None or data.split_sha256["test"] != recorded.sha256:
            raise DataError(
                "the test split rebuilt from the recorded data config differs from the one the model was trained "
                "and judged on (did the data file change?)"
            )
    model_labels = checkpoint_labels(checkpoint)
    if sorted(model_labels) != sorted(data.label_names):
        raise DataError(
            f"the data's labels {data.label_names} do not match the checkpoint's id2label {model_labels}; "
            "set data.path to the data set this model classifies"
        )
    to_model_id = {name: model_labels.index(name) for name in data.label_names}
    test = data.splits["test"]
    labels = [to_model_id[data.label_names[i]] for i in test["label"]]
    train_split = data.splits["train"].shuffle(seed=cfg.data.split_seed)
    calibration = train_split.select(range(min(cfg.export.calibration_samples, train_split.num_rows)))
    return EvalData(list(test["text"]), labels, list(calibration["text"]), data.source)
