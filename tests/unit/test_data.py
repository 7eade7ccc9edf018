"""Each bad-data case stops before training with a one-line error, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tiny import tiny_texts, write_csv
from textclf.config import load_config
from textclf.errors import DataError
from textclf_cli.app import app
from textclf_train.data import load_labelled_data


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
    topics = [(t, "sports,politics" if i % 2 else "science") for i, (t, _) in enumerate(rows)]
    multi_splits = tmp / "multi-splits"
    write_csv(multi_splits / "train.csv", topics)
    write_csv(multi_splits / "test.csv", [("a vote", "politics"), ("a storm", "weather,science")])
    rare = [*topics, ("the one rare text", "science,arts")]
    always = [(t, "news," + label) for t, label in topics]
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
        "label lists without multi_label": (
            _write_jsonl(tmp / "lists.jsonl", [{"text": t, "label": [label]} for t, label in rows]),
            [],
            "holds lists of labels; set data.multi_label=true",
        ),
        "multi-label: unseen label in test": (
            multi_splits,
            ["data.multi_label=true"],
            r"split 'test' has labels never seen in train: \['weather'\]",
        ),
        "multi-label: label never positive in train": (
            write_csv(tmp / "rare.csv", rare),
            ["data.multi_label=true", "data.test_fraction=0.2"],
            r"labels never positive in the train split after splitting: \['arts'\]",
        ),
        "multi-label: label on every text": (
            write_csv(tmp / "always.csv", always),
            ["data.multi_label=true"],
            r"labels on every train text \(nothing to learn from\): \['news'\]",
        ),
    }


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


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
        "label lists without multi_label",
        "multi-label: unseen label in test",
        "multi-label: label never positive in train",
        "multi-label: label on every text",
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


def test_multi_label_sets_from_jsonl_lists_and_separated_csv_agree(tmp_path: Path) -> None:
    from textclf_train.demo import multi_label_rows

    rows = multi_label_rows(120, seed=3)
    jsonl = _write_jsonl(tmp_path / "topics.jsonl", rows)
    # The same sets as "a|b" text, reversed and with a repeat: still the same set.
    csv_rows: list[tuple[object, object]] = []
    for row in rows:
        labels = list(row["labels"])  # type: ignore[call-overload]
        csv_rows.append((row["text"], "|".join([*reversed(labels), *labels[:1]])))
    csv = write_csv(tmp_path / "topics.csv", csv_rows)
    from_jsonl = load_labelled_data(_data_cfg(jsonl, "data.multi_label=true", "data.label_column=labels"))
    from_csv = load_labelled_data(_data_cfg(csv, "data.multi_label=true", "data.label_separator=|"))
    assert from_jsonl.multi_label and from_jsonl.label_names == ["politics", "science", "sports"]
    assert from_csv.label_names == from_jsonl.label_names
    assert from_csv.split_sha256 == from_jsonl.split_sha256
    assert sum(s.num_rows for s in from_jsonl.splits.values()) == 120
    test = from_jsonl.splits["test"]
    by_text = {str(row["text"]): row["labels"] for row in rows}
    for text, ids in zip(test["text"], test["label"], strict=True):
        assert [from_jsonl.label_names[i] for i in ids] == by_text[text]
    assert any(not ids for ids in from_jsonl.splits["train"]["label"]), "texts without a label are kept"
