"""`textclf predict`: bulk prediction of CSV / TSV / JSONL / Parquet files with the tiny exported model."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.imports import assert_imports_without
from tests.tiny import tiny_texts
from textclf.bulk.tables import CHUNK_ROWS
from textclf.config import Config
from textclf.inference.predictions import Prediction
from textclf.inference.runtime import Classifier
from textclf_cli.app import app

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def reference(exported_run: Config) -> Classifier:
    return Classifier.from_run(exported_run.run_dir)


def predict(cfg: Config, *args: str | Path) -> Result:
    return CliRunner().invoke(app, ["predict", "--set", f"artifacts_root={cfg.artifacts_root}", *map(str, args)])


def write_rows(path: Path, header: list[str], rows: list[list[Any]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def assert_matches(got: list[tuple[str, float, dict[str, float]]], expected: list[Prediction]) -> None:
    assert len(got) == len(expected)
    assert [label for label, _, _ in got] == [p.label for p in expected]
    for (_, score, scores), p in zip(got, expected, strict=True):
        assert score == pytest.approx(p.score, abs=1e-5)
        assert scores == pytest.approx(p.scores, abs=1e-5)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_ten_thousand_csv_rows_match_the_runtime(exported_run: Config, reference: Classifier, tmp_path: Path) -> None:
    texts = [text for text, _ in tiny_texts(10_000, seed=11)]
    source = write_rows(tmp_path / "in.csv", ["id", "text", "label"], [[i, t, "gold"] for i, t in enumerate(texts)])
    out = tmp_path / "out" / "predicted.csv"
    result = predict(exported_run, "--input", source, "--output", out)
    assert result.exit_code == 0, result.output
    assert "10,000 rows: 10,000 predicted, 0 without text" in result.output and "texts/s" in result.output

    rows = read_csv(out)
    assert list(rows[0]) == [
        "id",
        "text",
        "input_label",
        "label",
        "score",
        "scores",
        "truncated",
        "input_tokens",
        "error",
    ]
    assert [r["id"] for r in rows] == [str(i) for i in range(10_000)]
    assert [r["text"] for r in rows] == texts and {r["input_label"] for r in rows} == {"gold"}
    assert {r["error"] for r in rows} == {""} and {r["truncated"] for r in rows} == {"false"}
    got = [(r["label"], float(r["score"]), json.loads(r["scores"])) for r in rows]
    # The same calls as the command makes: each chunk's texts sorted by length, cut into batches of 32.
    chunks = [texts[start : start + CHUNK_ROWS] for start in range(0, len(texts), CHUNK_ROWS)]
    assert_matches(got, [p for chunk in chunks for p in reference.predict(chunk, batch_size=32)])
    assert leftovers(out.parent) == []


def test_jsonl_round_trip_keeps_every_key(exported_run: Config, reference: Classifier, tmp_path: Path) -> None:
    texts = [text for text, _ in tiny_texts(300, seed=5)]
    records = [{"id": i, "meta": {"source": "test", "n": [i]}, "text": t} for i, t in enumerate(texts)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = predict(exported_run, "-i", source, "-o", out, "--batch-size", "7")
    assert result.exit_code == 0, result.output

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [{k: r[k] for k in ("id", "meta", "text")} for r in rows] == records
    assert all(r["error"] is None and r["truncated"] is False for r in rows)
    assert_matches([(r["label"], r["score"], r["scores"]) for r in rows], reference.predict(texts, batch_size=7))


def test_parquet_round_trip_keeps_types(exported_run: Config, reference: Classifier, tmp_path: Path) -> None:
    texts = [text for text, _ in tiny_texts(500, seed=9)]
    table = pa.table(
        {
            "review": texts,
            "id": pa.array(range(500), type=pa.int32()),
            "weight": [i / 10 for i in range(500)],
            "tag": pa.array(["a", "b"] * 250).dictionary_encode(),
        }
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    out = tmp_path / "out.parquet"
    result = predict(exported_run, "-i", source, "-o", out, "--text-column", "review")
    assert result.exit_code == 0, result.output

    written = pq.read_table(out)
    assert written.schema.names == [
        "review",
        "id",
        "weight",
        "tag",
        "label",
        "score",
        "scores",
        "truncated",
        "input_tokens",
        "error",
    ]
    for name in ("review", "id", "weight", "tag"):
        assert written.schema.field(name).type == table.schema.field(name).type
        assert written.column(name).to_pylist() == table.column(name).to_pylist()
    assert written.schema.field("scores").type == pa.struct([(label, pa.float64()) for label in reference.labels])
    rows = written.to_pylist()
    assert_matches([(r["label"], r["score"], r["scores"]) for r in rows], reference.predict(texts, batch_size=32))


def test_csv_to_parquet_and_tsv(exported_run: Config, reference: Classifier, tmp_path: Path) -> None:
    texts = [text for text, _ in tiny_texts(50, seed=2)]
    source = write_rows(tmp_path / "in.tsv", ["text"], [[t] for t in texts], delimiter="\t")
    out = tmp_path / "out.parquet"
    assert predict(exported_run, "-i", source, "-o", out).exit_code == 0
    rows = pq.read_table(out).to_pylist()
    assert [r["text"] for r in rows] == texts
    assert_matches([(r["label"], r["score"], r["scores"]) for r in rows], reference.predict(texts, batch_size=32))
    back = tmp_path / "back.tsv"
    assert predict(exported_run, "-i", out, "-o", back).exit_code == 0
    assert [r["label"] for r in read_csv(back, "\t")] == [r["label"] for r in rows]


def test_rows_without_text_get_an_error_and_the_rest_is_predicted(
    exported_run: Config, reference: Classifier, tmp_path: Path
) -> None:
    texts = ["good film", "", "awful plot", "   ", "", "great acting", "dull"]
    source = write_rows(tmp_path / "in.csv", ["text", "n"], [[t, i] for i, t in enumerate(texts)])
    with source.open("a", encoding="utf-8") as handle:
        handle.write("\n")  # a blank line is no row
        handle.write("x\n")  # a short row: its text is x, its n is missing
    out = tmp_path / "out.csv"
    result = predict(exported_run, "-i", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert "8 rows: 5 predicted, 3 without text (row 2, 4, 5)" in result.output

    rows = read_csv(out)
    assert [r["error"] for r in rows] == ["", "empty text", "", "empty text", "empty text", "", "", ""]
    assert rows[-1]["n"] == ""
    empty = [r for r in rows if r["error"]]
    assert all(r["label"] == r["score"] == r["scores"] == "" for r in empty)
    good = [t for t in [*texts, "x"] if t.strip()]
    got = [(r["label"], float(r["score"]), json.loads(r["scores"])) for r in rows if not r["error"]]
    assert_matches(got, reference.predict(good, batch_size=32))


def test_jsonl_rows_with_null_missing_or_non_string_text(exported_run: Config, tmp_path: Path) -> None:
    records = [{"text": "good"}, {"text": None}, {"id": 3}, {"text": 42}, {"text": "bad"}]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = predict(exported_run, "-i", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert "5 rows: 2 predicted, 3 without text (row 2, 3, 4)" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["error"] for r in rows] == [None, "missing text", "missing text", "text is int, not a string", None]
    assert rows[2]["id"] == 3 and rows[1]["label"] is None and rows[0]["label"] in {"pos", "neg"}


@pytest.mark.parametrize(
    ("input_name", "output_name", "expected"),
    [
        ("in.xlsx", "out.csv", r"in\.xlsx: unknown file type \('\.xlsx'\); use one of \.csv, \.tsv, \.jsonl"),
        ("in.csv", "out.txt", r"out\.txt: unknown file type \('\.txt'\)"),
        ("missing.csv", "out.csv", r"missing\.csv: no such file"),
    ],
)
def test_unusable_files_are_named(
    exported_run: Config, tmp_path: Path, input_name: str, output_name: str, expected: str
) -> None:
    write_rows(tmp_path / "in.csv", ["text"], [["good"]])
    (tmp_path / "in.xlsx").write_bytes(b"PK")
    result = predict(exported_run, "-i", tmp_path / input_name, "-o", tmp_path / output_name)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert re.search(expected, " ".join(result.output.split())), result.output
    assert not (tmp_path / output_name).exists()


def test_missing_text_column_lists_the_columns(exported_run: Config, tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", ["review", "stars"], [["good", 5]])
    out = tmp_path / "out.csv"
    result = predict(exported_run, "-i", source, "-o", out)
    assert result.exit_code == 2
    assert "no column 'text' (--text-column); its columns: 'review', 'stars'" in " ".join(result.output.split())
    assert not out.exists() and leftovers(tmp_path) == []

    (tmp_path / "in.jsonl").write_text('{"review": "good"}\n', encoding="utf-8")
    result = predict(exported_run, "-i", tmp_path / "in.jsonl", "-o", out)
    assert result.exit_code == 2 and "its columns: 'review'" in result.output


def test_a_failure_midway_leaves_no_output(exported_run: Config, tmp_path: Path) -> None:
    rows = [[t] for t, _ in tiny_texts(6000, seed=1)]
    rows[5000] = ["good", "an extra field"]  # past the first chunk, so some rows were already written
    source = write_rows(tmp_path / "in.csv", ["text"], rows)
    out = tmp_path / "out.csv"
    result = predict(exported_run, "-i", source, "-o", out)
    assert result.exit_code == 2
    assert "row 5001 (line 5002): 2 fields, but the header names 1 columns" in " ".join(result.output.split())
    assert not out.exists() and leftovers(tmp_path) == []

    out.write_text("an older output\n")  # an existing file stays as it was
    assert predict(exported_run, "-i", source, "-o", out).exit_code == 2
    assert out.read_text() == "an older output\n" and leftovers(tmp_path) == []


def test_bento_model_store(
    exported_run: Config, reference: Classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pytest.importorskip("bentoml.models")  # the module itself: bentoml's lazy attribute copies it once
    asked: list[str] = []

    def get(tag: str) -> SimpleNamespace:
        asked.append(tag)
        return SimpleNamespace(path=str(exported_run.run_dir))  # a store entry mirrors the run folder

    monkeypatch.setattr(store, "get", get)
    source = write_rows(tmp_path / "in.csv", ["text"], [["good film"], ["awful"]])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", "-i", str(source), "-o", str(out), "--bento", "textclf:v1"])
    assert result.exit_code == 0, result.output
    assert asked == ["textclf:v1"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == [p.label for p in reference.predict(["good film", "awful"])]


def test_bento_tag_not_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = pytest.importorskip("bentoml.models")
    from bentoml.exceptions import NotFound

    def get(tag: str) -> SimpleNamespace:
        raise NotFound(f"no {tag}")

    monkeypatch.setattr(store, "get", get)
    source = write_rows(tmp_path / "in.csv", ["text"], [["good"]])
    result = CliRunner().invoke(app, ["predict", "-i", str(source), "-o", str(tmp_path / "o.csv"), "--bento", "x:y"])
    assert result.exit_code == 2
    assert "model 'x:y' is not in the BentoML model store" in " ".join(result.output.split())


def test_bulk_modules_import_without_torch_pandas_or_pyarrow() -> None:
    assert_imports_without(
        ["textclf.bulk.local", "textclf.bulk.tables", "textclf_cli.app"], ["torch", "transformers", "pandas", "pyarrow"]
    )


def test_on_overlength_chunk_writes_a_chunks_column(exported_run: Config, tmp_path: Path) -> None:
    from textclf.inference.text_options import TextOptions

    long_texts = [" ".join(t for t, _ in tiny_texts(n, seed=n)) for n in (120, 40)]  # ~1,000 and ~350 tokens
    texts = [long_texts[0], "a good film", "", long_texts[1], "awful plot"]
    source = write_rows(tmp_path / "in.csv", ["id", "text"], [[i, t] for i, t in enumerate(texts)])
    out = tmp_path / "out.csv"
    args = ("-i", source, "-o", out, "--on-overlength", "chunk", "--set", "serve.chunk_overlap_tokens=8")
    result = predict(exported_run, *args, "--batch-size", "5")
    assert result.exit_code == 0, result.output
    assert "5 rows: 4 predicted, 1 without text (row 3), 0 truncated" in result.output

    rows = read_csv(out)
    assert list(rows[0]) == ["id", "text", "label", "score", "scores", "truncated", "input_tokens", "chunks", "error"]
    # The reference reads the same windows (overlap 8, from --set) and batches them its own way.
    chunked = Classifier.from_run(exported_run.run_dir, chunk_overlap_tokens=8)
    good = [t for t in texts if t]
    expected = chunked.predict(good, batch_size=3, options=TextOptions(on_overlength="chunk"))
    predicted = [r for r in rows if not r["error"]]
    assert [int(r["chunks"]) for r in predicted] == [p.chunks for p in expected]
    assert int(predicted[0]["chunks"]) > 40 and int(predicted[2]["chunks"]) > 10 and predicted[1]["chunks"] == "1"
    assert {r["truncated"] for r in predicted} == {"false"} and rows[2]["chunks"] == ""
    assert_matches([(r["label"], float(r["score"]), json.loads(r["scores"])) for r in predicted], expected)

    parquet = tmp_path / "out.parquet"
    assert predict(exported_run, "-i", source, "-o", parquet, "--on-overlength", "chunk").exit_code == 0
    written = pq.read_table(parquet)
    assert written.schema.field("chunks").type == pa.int64()
    default_overlap = Classifier.from_run(exported_run.run_dir)  # serve.chunk_overlap_tokens of the config
    counts = default_overlap.predict(good, options=TextOptions(on_overlength="chunk"))
    assert [c for c in written.column("chunks").to_pylist() if c is not None] == [p.chunks for p in counts]

    refused = predict(exported_run, "-i", source, "-o", tmp_path / "x.csv", "--on-overlength", "error")
    assert refused.exit_code == 2 and "use truncate or chunk" in refused.output


def test_streams_option_changes_the_copies_not_the_rows(exported_run: Config, tmp_path: Path) -> None:
    from textclf.inference.runtime import default_intra_op_threads

    texts = [text for text, _ in tiny_texts(400, seed=21)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    outputs = {}
    for streams in ("1", str(default_intra_op_threads())):
        out = tmp_path / f"out-{streams}.jsonl"
        result = predict(exported_run, "-i", source, "-o", out, "--batch-size", "8", "--streams", streams)
        assert result.exit_code == 0, result.output
        outputs[streams] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    one, many = outputs.values()
    assert [r["label"] for r in one] == [r["label"] for r in many] and len(one) == 400
    for a, b in zip(one, many, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    too_many = default_intra_op_threads() + 1
    result = predict(exported_run, "-i", source, "-o", tmp_path / "x.jsonl", "--streams", str(too_many))
    assert result.exit_code == 2 and f"--streams {too_many}: give 1 to" in result.output
    assert not (tmp_path / "x.jsonl").exists()
