"""Each bad-data case stops before training with a one-line error, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tiny import tiny_texts, write_csv
from textclf.cli import app
from textclf.config import load_config
from textclf.errors import DataError
from train.data import load_labelled_data


def _data_cfg(path: Path, *extra: str):
    return load_config(overrides=[f"data.path={path}", *extra], environ={}).data


def _bad_sources(tmp: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (data.path, extra overrides, expected message)."""
    rows = tiny_texts(40)
    empty_texts = [("", "pos"), ("  ", "neg"), *rows]
    three_classes = [(t, str(i % 3)) for i, (t, _) in enumerate(rows)]
    splits = tmp / "splits"
    write_csv(splits / "train.csv", rows)
    write_csv(splits / "test.csv", [("a good film", "pos"), ("an odd film", "neutral")])
    (tmp / "empty.csv").write_text("")
    (tmp / "header_only.csv").write_text("text,label\n")
    return {
        "missing file": (tmp / "nope.csv", [], "data file not found"),
        "empty file": (tmp / "empty.csv", [], "the file is empty"),
        "no rows": (tmp / "header_only.csv", [], "has no rows"),
        "missing text column": (write_csv(tmp / "cols.csv", rows, ("review", "label")), [], "text column 'text'"),
        "missing label column": (write_csv(tmp / "cols2.csv", rows, ("text", "y")), [], "label column 'label'"),
        "empty texts, fail": (
            write_csv(tmp / "blank.csv", empty_texts),
            ["data.on_empty_text=fail"],
            "2 rows have an empty or missing text",
        ),
        "single class": (write_csv(tmp / "one.csv", [(t, "pos") for t, _ in rows]), [], "single class"),
        "too many classes": (
            write_csv(tmp / "three.csv", three_classes),
            ["data.max_classes=2"],
            "3 classes, more than data.max_classes=2",
        ),
        "unseen label in test": (splits, [], r"split 'test' has labels never seen in train: \['neutral'\]"),
        "unsupported type": (write_csv(tmp / "data.xlsx", rows), [], "unsupported file type"),
        "unknown builtin": (Path("builtin:imdb"), [], "unknown built-in data set"),
    }


def _case_names() -> list[str]:
    return [
        "missing file",
        "empty file",
        "no rows",
        "missing text column",
        "missing label column",
        "empty texts, fail",
        "single class",
        "too many classes",
        "unseen label in test",
        "unsupported type",
        "unknown builtin",
    ]


@pytest.mark.parametrize("case", _case_names())
def test_bad_data_is_refused(tmp_path: Path, case: str) -> None:
    path, extra, message = _bad_sources(tmp_path)[case]
    with pytest.raises(DataError, match=message):
        load_labelled_data(_data_cfg(path, *extra))


@pytest.mark.parametrize("case", ["missing file", "single class", "unseen label in test"])
def test_cli_bad_data_exits_nonzero_and_writes_nothing(tmp_path: Path, case: str) -> None:
    path, extra, message = _bad_sources(tmp_path)[case]
    artifacts = tmp_path / "artifacts"
    expected_words = message.split(":")[0].replace("\\", "").split()[:2]
    args = ["train", "--set", f"data.path={path}", "--set", f"artifacts_root={artifacts}"]
    for item in extra:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert all(word in result.output for word in expected_words), result.output
    assert "Traceback" not in result.output
    assert not artifacts.exists(), "a refused run must write nothing"


def test_empty_texts_are_counted_and_dropped(tmp_path: Path) -> None:
    rows = [("", "pos"), ("   ", "neg"), *tiny_texts(60)]
    data = load_labelled_data(_data_cfg(write_csv(tmp_path / "d.csv", rows)))
    assert data.dropped_empty_texts == 2
    assert sum(split.num_rows for split in data.splits.values()) == 60


def test_split_is_deterministic_stratified_and_covers_all_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", tiny_texts(200))
    first = load_labelled_data(_data_cfg(path))
    second = load_labelled_data(_data_cfg(path))
    assert first.split_sha256 == second.split_sha256
    sizes = {name: split.num_rows for name, split in first.splits.items()}
    assert sizes == {"train": 160, "validation": 20, "test": 20}
    for split in first.splits.values():
        labels = split["label"]
        assert labels.count(0) == labels.count(1), "stratified: both classes equally represented"
    texts = [t for split in first.splits.values() for t in split["text"]]
    assert len(texts) == 200, "every row lands in exactly one split"
    other_seed = load_labelled_data(_data_cfg(path, "data.split_seed=7"))
    assert other_seed.split_sha256["test"] != first.split_sha256["test"]


def test_jsonl_with_integer_labels_and_own_splits(tmp_path: Path) -> None:
    folder = tmp_path / "own"
    folder.mkdir()
    for split, n in (("train", 60), ("validation", 10), ("test", 10)):
        lines = [json.dumps({"body": t, "y": int(lab == "pos")}) for t, lab in tiny_texts(n, seed=n)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    data = load_labelled_data(_data_cfg(folder, "data.text_column=body", "data.label_column=y"))
    assert data.label_names == ["0", "1"]
    assert {name: split.num_rows for name, split in data.splits.items()} == {"train": 60, "validation": 10, "test": 10}
    assert set(data.source["files"]) == {"train", "validation", "test"}


def test_max_rows_takes_a_stratified_sample(tmp_path: Path) -> None:
    data = load_labelled_data(_data_cfg(write_csv(tmp_path / "d.csv", tiny_texts(200)), "data.max_rows=100"))
    assert sum(split.num_rows for split in data.splits.values()) == 100
