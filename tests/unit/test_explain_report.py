"""The report's explanation part (issue 38), from a hand-made explain.json: `textclf report` on the committed sweep
reads it into the headline (the deletion gap at k=3 with its interval, the cost ratio with its A/A control) and
report.md's section; without one, the committed report renders as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from textclf.artifacts.records import load_report, write_report
from textclf.config import load_config
from textclf.paths import REPORT_MD, RESULTS_JSON
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.markdown import render
from textclf_benchmarks.report import explain_figures, run
from textclf_benchmarks.schema import EXPLAIN_JSON, DeletionGap, ExplainCost, ExplainReport, Measured, Results

REPORTS = Path(__file__).resolve().parents[2] / "reports"
COMMITTED = REPORTS / "xeon" / "default"  # a report with bulk and GPU files, and no explain.json of its own
GAP = DeletionGap(
    mean=1.25,
    low=1.1,
    high=1.4,
    mean_top_drop=1.5,
    mean_random_drop=0.25,
    texts=480,
    skipped=20,
    k=3,
    draws=10,
)
COST = ExplainCost(
    ran=True,
    server="textclf Bento (service:TextClassifier), 2 worker(s) × 1 thread(s)",
    model={"variant": "int8-qdq"},
    texts=100,
    rounds=5,
    top_k_words=10,
    mean_explained_words=21.5,
    plain_p50_ms=8.0,
    explained_p50_ms=60.0,
    plain_aa_p50_ms=8.2,
    ratio=7.5,
    aa_ratio=1.025,
)


def report(cost: ExplainCost = COST) -> ExplainReport:
    common = Measured.now("default")
    return ExplainReport(
        **common, variant="int8-qdq", engine="ORT", max_seq_len=128, max_explain_words=64, deletion_gap=GAP, cost=cost
    )


def test_headline_figures_from_the_report() -> None:
    figures = explain_figures(report())
    assert figures == {
        "explain_deletion_gap_k3": 1.25,
        "explain_deletion_gap_k3_ci95_low": 1.1,
        "explain_deletion_gap_k3_ci95_high": 1.4,
        "explain_cost_ratio_b1": 7.5,
        "explain_cost_aa_ratio_b1": 1.025,
    }
    unmeasured = explain_figures(report(ExplainCost(ran=False, reason="server exited with 1")))
    assert unmeasured["explain_cost_ratio_b1"] is None and unmeasured["explain_deletion_gap_k3"] == 1.25
    assert explain_figures(None) == {}


def test_the_report_reads_explain_json_into_the_headline_and_its_section(tmp_path: Path) -> None:
    cfg = load_config(environ={}, model=BenchmarkConfig)
    out = tmp_path / "report"
    out.mkdir()
    for name in ("bench.json", "load.json", "bulk.json"):
        shutil.copy(COMMITTED / name, out / name)
    run(cfg, tmp_path / "run", out_dir=out)
    plain = load_report(out / RESULTS_JSON, Results)
    assert plain.explain is None and plain.headline.explain_deletion_gap_k3 is None
    assert "## Explanations" not in (out / REPORT_MD).read_text()

    written = report()
    write_report(out / EXPLAIN_JSON, written)
    run(cfg, tmp_path / "run", out_dir=out)
    results = load_report(out / RESULTS_JSON, Results)
    assert results.explain == written
    h = results.headline
    assert (h.explain_deletion_gap_k3, h.explain_deletion_gap_k3_ci95_low, h.explain_deletion_gap_k3_ci95_high) == (
        1.25,
        1.1,
        1.4,
    )
    assert h.explain_cost_ratio_b1 == 7.5 and h.explain_cost_aa_ratio_b1 == 1.025
    text = (out / REPORT_MD).read_text()
    section = text.split("## Explanations", 1)[1].split("\n## ", 1)[0]
    assert f"explanations {written.created_at}" in text.split("\n")[2]  # the "Measured ..." line
    assert "Deletion gap at k=3 on 480 test texts (20 left out" in section
    assert "**1.250**, 95 % paired-bootstrap interval [1.100, 1.400]" in section
    assert "plain 8.0 ms, explained 60.0 ms, plain again 8.2 ms: `explain_cost_ratio_b1` = **7.50×**" in section
    assert "the A/A control (plain ÷ plain) 1.025 is this run's noise floor" in section
    assert "each of 100 test texts posted plain, explained (`top_k_words` 10; 21.5 words" in section


def test_a_cost_that_did_not_run_says_why() -> None:
    results = load_report(COMMITTED / RESULTS_JSON, Results)
    failed = report(ExplainCost(ran=False, reason="server exited with 1"))
    text = render(results.model_copy(update={"explain": failed}))
    section = text.split("## Explanations", 1)[1]
    assert "Cost of an explained request: not measured: server exited with 1." in section
    assert "**1.250**" in section


@pytest.mark.parametrize("folder", ["xeon/default", "avx2/default", "zen4/default"])
def test_every_committed_report_renders_unchanged_without_explain_json(folder: str) -> None:
    committed = REPORTS / folder
    results = load_report(committed / RESULTS_JSON, Results)
    assert results.explain is None
    assert render(results) == (committed / REPORT_MD).read_text()
