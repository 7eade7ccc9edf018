"""`textclf bench-long` on the tiny model: it runs and writes its files (no accuracy or timing is asserted)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from textclf.artifacts.records import load_report
from textclf.config import Config
from textclf_benchmarks.long_docs import LONG_DOCS_JSON, LONG_DOCS_MD, SENTENCES_PER_DOC, LongDocsReport
from textclf_cli.app import app


def test_bench_long_writes_both_document_sets(exported_run: Config, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    args = ["bench-long", "--set", f"artifacts_root={exported_run.artifacts_root}", "--set", f"reports_root={reports}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = load_report(reports / "default" / LONG_DOCS_JSON, LongDocsReport)
    names = [s.name for s in report.sets]
    # The tiny test split (32 sentences) has too few for the biggest documents: those sets are left out.
    assert names[:3] == [f"rotten-tomatoes-{k}" for k in SENTENCES_PER_DOC[:3]] and names[-1] == "convention-speeches"
    sentences = report.sets[0]
    for doc_set in report.sets[1:-1]:
        assert doc_set.documents * (doc_set.sentences_per_doc or 0) <= sentences.documents
        assert doc_set.accuracy is not None and set(doc_set.accuracy) == {"truncate", "chunk-mean", "chunk-max"}
        assert doc_set.mean_windows >= 1 and doc_set.max_windows >= doc_set.mean_windows
    for doc_set in report.sets:  # a two-label model's mean top probability lies in [0.5, 1]
        estimated = doc_set.estimated_accuracy or {}
        assert set(estimated) == {"truncate", "chunk-mean", "chunk-max"}
        assert all(0.5 <= value <= 1 for value in estimated.values())
    speeches = report.sets[-1]
    assert speeches.documents == 189 and speeches.accuracy is None and speeches.max_windows > 1
    assert report.max_seq_len == 32 and report.chunk_overlap_tokens == 15  # the default 32, capped for the tiny model
    estimated = speeches.estimated_accuracy or {}
    assert estimated["chunk-max"] != estimated["truncate"]  # the windows' logits, not the first window's
    assert "| convention-speeches | 189 |" in (reports / "default" / LONG_DOCS_MD).read_text()
