"""The report's confidence part (issue 36), from a hand-made record: the headline figures (after − before with the
interval's high end, the selective answers at target accuracy 0.95 beside their bound), the plot, report.md's
section, and `textclf report` end to end on the committed sweep with a manifest that carries the record."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.artifacts import export_section, train_section
from textclf.artifacts.confidence import ConfidenceRecord, ConfidenceTest, CurvePoint, Interval, ReliabilityBin
from textclf.artifacts.manifest import update_manifest
from textclf.artifacts.records import load_report
from textclf.config import load_config
from textclf.paths import REPORT_MD, RESULTS_JSON
from textclf_benchmarks import plots
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.markdown import render
from textclf_benchmarks.report import confidence, confidence_figures, run
from textclf_benchmarks.schema import NotRun, Results

COMMITTED = Path(__file__).resolve().parents[2] / "reports" / "xeon" / "default"  # with bulk.json
THRESHOLDS = [0.5, 0.7, 0.8, 0.9, 0.97]
# Validation accuracy reaches 0.95 from 0.8 up (0.9 dips under it, so the rule's 'every t′ ≥ t' picks 0.97).
VALIDATION = [0.84, 0.9, 0.96, 0.94, 0.97]
TEST = [(1.0, 0.85), (0.8, 0.9), (0.6, 0.95), (0.4, 0.955), (0.25, 0.96)]  # (coverage, accuracy) at each threshold


def _bins(confidences: list[float | None], accuracies: list[float | None]) -> list[ReliabilityBin]:
    return [
        ReliabilityBin(lower=i / 15, upper=(i + 1) / 15, count=0 if c is None else 40, mean_confidence=c, accuracy=a)
        for i, (c, a) in enumerate(zip(confidences, accuracies, strict=True))
    ]


def record() -> ConfidenceRecord:
    test = ConfidenceTest(
        texts=400,
        bootstrap_resamples=1000,
        ece_before=0.06,
        ece_after=0.02,
        ece_delta_ci95=Interval(low=-0.05, high=-0.02),
        nll_before=0.40,
        nll_after=0.35,
        nll_delta_ci95=Interval(low=-0.07, high=-0.03),
        brier_before=0.25,
        brier_after=0.24,
        brier_delta_ci95=Interval(low=-0.02, high=-0.004),
        reliability_before=_bins([0.55, None, 0.75, 0.95], [0.5, None, 0.6, 0.85]),
        reliability_after=_bins([0.55, None, 0.7, 0.88], [0.52, None, 0.68, 0.87]),
    )
    return ConfidenceRecord(
        temperature=1.6,
        validation_texts=300,
        test=test,
        validation_curve=[
            CurvePoint(threshold=t, coverage=1 - i / 5, accuracy=a)
            for i, (t, a) in enumerate(zip(THRESHOLDS, VALIDATION, strict=True))
        ],
        risk_coverage=[
            CurvePoint(threshold=t, coverage=c, accuracy=a) for t, (c, a) in zip(THRESHOLDS, TEST, strict=True)
        ],
    )


def test_headline_figures_from_the_record() -> None:
    figures = confidence_figures(record())
    assert figures["confidence_ece_before"] == 0.06 and figures["confidence_ece_after"] == 0.02
    assert figures["confidence_nll_after_minus_before"] == pytest.approx(-0.05)
    assert figures["confidence_nll_after_minus_before_ci95_high"] == -0.03
    assert figures["confidence_brier_after_minus_before"] == pytest.approx(-0.01)
    assert figures["confidence_brier_after_minus_before_ci95_high"] == -0.004
    # The threshold is the validation curve's (0.9 dips under 0.95, so 0.97); coverage and accuracy are test's there.
    assert figures["selective_threshold_at_0_95"] == 0.97
    assert (figures["selective_coverage_at_0_95"], figures["selective_accuracy_at_0_95"]) == (0.25, 0.96)
    assert figures["selective_accuracy_bound_at_0_95"] == pytest.approx(0.95 - 2 * math.sqrt(0.95 * 0.05 / 100))
    unreachable = record().model_copy(
        update={"validation_curve": [CurvePoint(threshold=0.5, coverage=1, accuracy=0.9)]}
    )
    assert "selective_coverage_at_0_95" not in confidence_figures(unreachable)
    assert confidence_figures(NotRun(ran=False, reason="skipped")) == {} == confidence_figures(None)


def test_the_plot_is_a_png_and_needs_a_measured_record(tmp_path: Path) -> None:
    results = load_report(COMMITTED / RESULTS_JSON, Results)
    headline = results.headline.model_copy(update=confidence_figures(record()))
    assert plots.confidence(record(), headline, tmp_path / "confidence.png")
    assert (tmp_path / "confidence.png").read_bytes()[:4] == b"\x89PNG"
    assert not plots.confidence(NotRun(ran=False, reason="x"), headline, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_the_section_names_every_figure() -> None:
    results = load_report(COMMITTED / RESULTS_JSON, Results)
    headline = results.headline.model_copy(update=confidence_figures(record()))
    text = render(
        results.model_copy(update={"headline": headline, "confidence": record(), "confidence_variant": "fp32"})
    )
    section = text.split("## Confidence", 1)[1].split("\n## ", 1)[0]
    assert "`fp32`, temperature 1.6 fitted on 300 validation texts; 400 test texts" in section
    assert "| NLL | 0.4000 | 0.3500 | -0.0500 | [-0.0700, -0.0300] |" in section
    assert "| Brier | 0.2500 | 0.2400 | -0.0100 | [-0.0200, -0.0040] |" in section
    bound = 0.95 - 2 * math.sqrt(0.95 * 0.05 / 100)
    assert (
        "threshold 0.9700 (validation); on test it answers 25.0% of the texts, accuracy 0.9600 against the bound "
        in section
    )
    assert f"= {bound:.4f}" in section
    skipped = render(results.model_copy(update={"confidence": NotRun(ran=False, reason="40 validation texts")}))
    assert "## Confidence\n\nNot measured: 40 validation texts." in skipped


def test_the_report_reads_the_serving_variants_record_from_the_manifest(tmp_path: Path) -> None:
    cfg = load_config(environ={}, model=BenchmarkConfig)
    run_dir, out = tmp_path / "run", tmp_path / "report"
    variant, missing = confidence(cfg, run_dir)
    assert variant is None and isinstance(missing, NotRun) and "holds no confidence record" in missing.reason
    export = export_section("fp32")
    export.variants["fp32"].confidence = record()
    update_manifest(run_dir, train_section())
    update_manifest(run_dir, export)
    assert confidence(cfg, run_dir) == ("fp32", record())
    out.mkdir()
    for name in ("bench.json", "load.json", "bulk.json"):
        shutil.copy(COMMITTED / name, out / name)
    run(cfg, run_dir, out_dir=out)
    results = load_report(out / RESULTS_JSON, Results)
    assert results.confidence == record() and results.confidence_variant == "fp32"
    assert results.headline.selective_coverage_at_0_95 == 0.25 and "confidence.png" in results.plots
    assert (out / "confidence.png").read_bytes()[:4] == b"\x89PNG"
    assert "![confidence.png](confidence.png)" in (out / REPORT_MD).read_text()
    skipped = ConfidenceRecord(skipped_reason="30 validation texts, fewer than 50", validation_texts=30)
    export.variants["fp32"].confidence = skipped
    update_manifest(run_dir, export)
    assert confidence(cfg, run_dir) == ("fp32", NotRun(ran=False, reason="30 validation texts, fewer than 50"))
