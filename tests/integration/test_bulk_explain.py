"""`textclf predict --explain K`: an `explanation` column in bulk output, locally and on Ray Data, from the tiny
exported model (max_seq_len 32)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.tiny import tiny_texts
from textclf.bulk.explained import ExplainSettings
from textclf.config import Config
from textclf.errors import InputError
from textclf.inference.explain import chosen_labels
from textclf.inference.predictions import Prediction
from textclf.inference.runtime import Classifier
from textclf_cli.app import app

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# Offsets count characters, not bytes: accents, a dash, CJK ideographs (three words to BERT's normalizer, one to a
# whitespace split), punctuation glued to words, runs of spaces.
AWKWARD = "Émile's  film — was GREAT!!  日本語 great,boring… fine"


def predict(cfg: Config, *args: str | Path) -> Result:
    return CliRunner().invoke(app, ["predict", "--set", f"artifacts_root={cfg.artifacts_root}", *map(str, args)])


def texts_with_gaps(n: int) -> list[Any]:
    """`n` short texts, one long (truncated at 32 tokens), the awkward one, and rows without a text."""
    texts: list[Any] = [text for text, _ in tiny_texts(n, seed=5)]
    texts[1] = " ".join(text for text, _ in tiny_texts(12, seed=9))  # ~100 words, far past 32 tokens
    texts[2] = AWKWARD
    texts[4] = ""
    texts[6] = "   "
    return texts


def write_csv(path: Path, texts: list[Any]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, text] for i, text in enumerate(texts))
    return path


def write_jsonl(path: Path, texts: list[Any]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_parts(folder: Path) -> list[Path]:
    parts = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    assert parts
    return parts


def assert_explains(text: str, label: str, explanation: dict[str, list[dict[str, Any]]], k: int) -> None:
    """One row's explanation: its predicted label only, at most k words, each indexing the text, strongest first."""
    assert list(explanation) == [label]
    words = explanation[label]
    assert 1 <= len(words) <= k
    for word in words:
        assert set(word) == {"start", "end", "word", "weight"}
        assert text[word["start"] : word["end"]] == word["word"]
    strengths = [abs(word["weight"]) for word in words]
    assert strengths == sorted(strengths, reverse=True)


def test_csv_column_holds_json_that_indexes_each_text(exported_run: Config, tmp_path: Path) -> None:
    texts = texts_with_gaps(30)
    out = tmp_path / "out.csv"
    result = predict(exported_run, "-i", write_csv(tmp_path / "in.csv", texts), "-o", out, "--explain", "3")
    assert result.exit_code == 0, result.output
    assert "30 rows: 28 predicted, 2 without text" in result.output
    rows = read_csv(out)
    assert list(rows[0])[-2:] == ["error", "explanation"]
    assert [r["explanation"] for r in rows if r["error"]] == ["", ""]
    explained = [(text, row) for text, row in zip(texts, rows, strict=True) if not row["error"]]
    for text, row in explained:
        assert_explains(text, row["label"], json.loads(row["explanation"]), k=3)
    assert all(len(json.loads(row["explanation"])[row["label"]]) == 3 for _, row in explained)  # each has more

    # A weight is the row's own score of its label minus the score of the text with that word deleted.
    reference = Classifier.from_run(exported_run.run_dir)
    text, row = explained[0]
    for word in json.loads(row["explanation"])[row["label"]]:
        without = text[: word["start"]] + text[word["end"] :]
        deleted = reference.predict([without])[0].scores[row["label"]]
        assert word["weight"] == pytest.approx(float(row["score"]) - deleted, abs=1e-5)

    # The long text is cut at 32 tokens: only the words the model reads are explained.
    long = rows[1]
    assert long["truncated"] == "true"
    assert all(w["end"] <= read_end(reference, texts[1]) for w in json.loads(long["explanation"])[long["label"]])


def read_end(classifier: Classifier, text: str) -> int:
    """Where the part of a text the model reads (cut at max_seq_len tokens from the right) ends, in characters."""
    read = classifier.tokenizer.encode(text)
    return max(end for (_, end), special in zip(read.offsets, read.special_tokens_mask, strict=True) if not special)


def test_words_index_the_original_text_whatever_its_characters(exported_run: Config, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = predict(exported_run, "-i", write_jsonl(tmp_path / "in.jsonl", [AWKWARD]), "-o", out, "--explain", "50")
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text(encoding="utf-8"))
    words = sorted(row["explanation"][row["label"]], key=lambda w: w["start"])
    # BERT's normalizer and pre-tokenizer: punctuation apart, each CJK ideograph a word, accents kept in the span.
    assert [w["word"] for w in words] == [
        *("Émile", "'", "s", "film", "—", "was", "GREAT", "!", "!", "日", "本", "語"),
        *("great", ",", "boring", "…", "fine"),
    ]
    assert all(AWKWARD[w["start"] : w["end"]] == w["word"] for w in words)


def test_k_and_max_words_bound_the_words(exported_run: Config, tmp_path: Path) -> None:
    texts = ["good", "a very good film and a fine plot"]
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    out = tmp_path / "out.jsonl"
    capped = ("--set", "serve.max_explain_words=4")
    result = predict(exported_run, "-i", source, "-o", out, "--explain", "10", *capped)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # JSON-lines keeps the explanation a nested object, as it keeps `scores`.
    counts = [len(row["explanation"][row["label"]]) for row in rows]
    assert counts == [1, 4]  # one word has one; the other is explained over its first 4 words of 8
    assert {w["word"] for w in rows[1]["explanation"][rows[1]["label"]]} == {"a", "very", "good", "film"}

    # A text cut at 32 tokens is explained over the words the model reads, every one of them (K over them all).
    long_text = " ".join(text for text, _ in tiny_texts(12, seed=9))  # ~100 words
    source = write_jsonl(tmp_path / "long.jsonl", [long_text])
    assert predict(exported_run, "-i", source, "-o", out, "--explain", "100").exit_code == 0
    row = json.loads(out.read_text(encoding="utf-8"))
    words = row["explanation"][row["label"]]
    end = read_end(Classifier.from_run(exported_run.run_dir), long_text)
    assert row["truncated"] is True and len(words) == len(long_text[:end].split()) < len(long_text.split())
    assert all(w["end"] <= end for w in words)


def test_parquet_column_is_a_list_of_structs_strongest_first(exported_run: Config, tmp_path: Path) -> None:
    texts = texts_with_gaps(20)
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    result = predict(exported_run, "-i", source, "-o", tmp_path / "out.parquet", "--explain", "2")
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("explanation").type == pa.list_(
        pa.struct(
            [
                ("label", pa.string()),
                ("start", pa.int64()),
                ("end", pa.int64()),
                ("word", pa.string()),
                ("weight", pa.float64()),
            ]
        )
    )
    csv_out = tmp_path / "out.csv"
    assert predict(exported_run, "-i", source, "-o", csv_out, "--explain", "2").exit_code == 0
    for row, csv_row in zip(table.to_pylist(), read_csv(csv_out), strict=True):
        if row["error"] is not None:
            assert row["explanation"] is None
            continue
        as_json = json.loads(csv_row["explanation"])[row["label"]]
        assert [w.pop("label") for w in row["explanation"]] == [row["label"]] * len(as_json)
        assert row["explanation"] == as_json  # the same words, in the same order


def test_progress_moves_through_the_explanation(exported_run: Config, tmp_path: Path) -> None:
    from textclf.bulk.local import BulkProgress
    from textclf.bulk.local import run as bulk_run

    texts = [text for text, _ in tiny_texts(40, seed=2)]
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    steps: list[BulkProgress] = []
    settings = ExplainSettings(top_k_words=2)
    summary = bulk_run(
        exported_run.run_dir,
        source,
        tmp_path / "out.jsonl",
        text_column="text",
        batch_size=4,
        progress=steps.append,
        explain=settings,
    )
    assert summary.predicted == 40
    positions = [step.done for step in steps]
    assert positions == sorted(positions) and positions[-1] == steps[-1].total
    # Classified, the bar stands at a small share of the chunk: the explanation's texts move it the rest of the way.
    classified = [step.done for step in steps if step.predicted == 40]
    assert len(set(classified)) > 3 and classified[0] < steps[-1].total // 4


def test_bad_k_is_refused_before_any_work(exported_run: Config, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a good film"])
    for bad in ("0", "-2", "two", "1.5"):
        result = predict(exported_run, "-i", source, "-o", tmp_path / "out.csv", "--explain", bad)
        assert result.exit_code == 2 and "--explain" in result.output, (bad, result.output)
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(InputError, match="top_k_words must be a positive integer"):
        ExplainSettings(top_k_words=0)


def test_without_explain_there_is_no_column(exported_run: Config, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", ["a good film", ""])
    assert predict(exported_run, "-i", source, "-o", tmp_path / "out.csv").exit_code == 0
    assert "explanation" not in read_csv(tmp_path / "out.csv")[0]


def test_multi_label_explains_each_answered_label() -> None:
    labels = ["a", "b", "c"]
    scores = {"a": 0.9, "b": 0.2, "c": 0.7}
    assert chosen_labels(Prediction("a", 0.9, scores, labels=["a", "c"]), labels) == [0, 2]
    assert chosen_labels(Prediction("a", 0.9, scores, labels=[]), labels) == []
    assert chosen_labels(Prediction("c", 0.7, scores), labels) == [2]


def test_chunked_rows_explain_their_first_window_for_the_documents_label(exported_run: Config, tmp_path: Path) -> None:
    long_text = " ".join(text for text, _ in tiny_texts(30, seed=4))
    texts = [long_text, "an awful plot"]
    out = tmp_path / "out.jsonl"
    args = ("-i", write_jsonl(tmp_path / "in.jsonl", texts), "-o", out, "--on-overlength", "chunk", "--explain", "3")
    result = predict(exported_run, *args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["chunks"] > 3
    for text, row in zip(texts, rows, strict=True):
        assert_explains(text, row["label"], row["explanation"], k=3)
    first_window_end = read_end(Classifier.from_run(exported_run.run_dir), long_text)
    assert all(w["end"] <= first_window_end for w in rows[0]["explanation"][rows[0]["label"]])


def test_ray_writes_the_same_explanations_as_the_local_path(exported_run: Config, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    texts = texts_with_gaps(40)
    source = write_jsonl(tmp_path / "in.jsonl", texts)
    local_out = tmp_path / "local.parquet"
    assert predict(exported_run, "-i", source, "-o", local_out, "--explain", "2").exit_code == 0
    local = {row["id"]: row for row in pq.read_table(local_out).to_pylist()}

    result = predict(exported_run, "-i", source, "-o", tmp_path / "ray.parquet", "--explain", "2", "--engine", "ray")
    assert result.exit_code == 0, result.output
    ray_rows: dict[int, dict[str, Any]] = {}
    for part in read_parts(tmp_path / "ray.parquet"):
        table = pq.read_table(part)
        assert table.schema.field("explanation").type == pq.read_table(local_out).schema.field("explanation").type
        ray_rows |= {row["id"]: row for row in table.to_pylist()}
    assert ray_rows.keys() == local.keys()
    for key, row in local.items():
        got = ray_rows[key]["explanation"]
        if row["explanation"] is None:
            assert got is None
            continue
        assert [(w["label"], w["start"], w["end"], w["word"]) for w in got] == [
            (w["label"], w["start"], w["end"], w["word"]) for w in row["explanation"]
        ]
        assert [w["weight"] for w in got] == pytest.approx([w["weight"] for w in row["explanation"]], abs=1e-5)

    # CSV part files carry the JSON, as the local CSV does; JSON-lines parts the object.
    for output in ("ray.csv", "ray.jsonl"):
        result = predict(exported_run, "-i", source, "-o", tmp_path / output, "--explain", "2", "--engine", "ray")
        assert result.exit_code == 0, result.output
        assert "40 rows: 38 predicted, 2 without text" in result.output
        parts = read_parts(tmp_path / output)
        if output.endswith(".csv"):
            rows = [
                row | {"explanation": json.loads(row["explanation"] or "null")} for p in parts for row in read_csv(p)
            ]
        else:
            rows = [json.loads(line) for p in parts for line in p.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 40
        for row in rows:
            if row["error"]:
                assert row["explanation"] is None and row["input_tokens"] in ("", None)
            else:
                assert_explains(texts[int(row["id"])], row["label"], row["explanation"], k=2)
                assert str(row["input_tokens"]).isdigit(), row["input_tokens"]  # 14, never 14.0
