"""`textclf bench-drift` on the tiny exported run: a one-worker Bento on loopback, four streams of 100 texts (the
smallest window serve.monitor_window takes), the monitoring path's cost in a spawned process, drift.json and its
place in the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from textclf.artifacts.drift_reference import SIGNALS
from textclf.artifacts.manifest import require_export, update_manifest
from textclf.artifacts.records import load_report
from textclf.config import Config
from textclf.inference.runtime import Classifier
from textclf.paths import EVAL_TEXTS, ONNX_DIR
from textclf_benchmarks.markdown import _drift
from textclf_benchmarks.report import drift_figures
from textclf_benchmarks.schema import DRIFT_JSON, DriftBench
from textclf_cli.app import app
from textclf_export.drift_reference import write_references

WINDOW = 100


@pytest.fixture(scope="module")
def monitored(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The exported run, copied, its serving variant's reference rewritten for a window of 100 texts."""
    cfg = exported_run.model_copy(update={"artifacts_root": tmp_path_factory.mktemp("drift") / "artifacts"})
    shutil.copytree(exported_run.run_dir, cfg.run_dir)
    export = require_export(cfg.run_dir)
    variants, name = dict(export.variants), str(export.serving_variant)
    classifier = Classifier(cfg.run_dir / ONNX_DIR / name, expected_files=variants[name].files)
    texts = [json.loads(line)["text"] for line in (cfg.run_dir / EVAL_TEXTS).read_text().splitlines()]
    write_references(cfg.run_dir / ONNX_DIR, variants, {name: classifier}, texts, WINDOW)
    update_manifest(cfg.run_dir, export.model_copy(update={"variants": variants}))
    return cfg


def test_bench_drift_streams_to_a_served_bento_and_measures_the_monitoring_cost(
    monitored: Config, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    sets = ["--set", f"artifacts_root={monitored.artifacts_root}", "--set", f"reports_root={reports}"]
    sizes = ["--request-texts", "25", "--chunk-texts", "50", "--cost-texts", "20"]
    result = CliRunner().invoke(app, ["bench-drift", *sets, *sizes])
    assert result.exit_code == 0, result.output
    report = load_report(reports / "default" / DRIFT_JSON, DriftBench)
    export = require_export(monitored.run_dir)
    assert report.variant == export.serving_variant and report.reference.window == WINDOW
    assert report.model is not None and report.model["variant"] == export.serving_variant  # the Bento's `GET /model`
    assert "1 worker(s)" in report.server and (report.request_texts, report.chunk_texts) == (25, 50)
    streams = {stream.name: stream for stream in report.streams}
    assert list(streams) == ["validation", "speeches", "one-class", "length-matched"]
    for stream in streams.values():
        assert stream.texts == WINDOW and set(stream.scores) == set(SIGNALS)
        assert all(score is not None for score in stream.scores.values())  # the window was full throughout
        assert len(stream.estimated_accuracy) == 2 and all(0 < a <= 1 for a in stream.estimated_accuracy)
        fired = stream.fired_after_texts
        assert all(0 < texts <= WINDOW and texts % 25 == 0 for texts in fired.values())  # polled after each request
        assert (stream.alarm_after_texts is None) == (not fired)  # the alarm: any signal past its critical value
        assert not stream.alarm_before  # a window of the reference's own test texts
    # The tiny model answers its two classes about evenly: 100 texts of one class move the label mix.
    assert "label_mix" in streams["one-class"].fired_after_texts
    labelled = [streams[name].measured_accuracy for name in ("validation", "one-class")]
    assert all(m is not None and len(m) == 2 for m in labelled)
    assert streams["speeches"].measured_accuracy is None
    cost = report.cost
    assert cost.texts == 20 and cost.observe_us > 0 and cost.background_us > 0 and cost.engine_ms > 0
    per_text_us = cost.observe_us + cost.background_us + cost.evaluation_ms * cost.engine_ms
    assert cost.ratio == pytest.approx(per_text_us / (cost.engine_ms * 1e3))
    # What `textclf report` shows of it: the headline keys and a Drift section.
    figures: dict[str, Any] = drift_figures(report)
    assert figures["drift_monitor_cpu_ratio_b1"] == cost.ratio
    assert figures["drift_speech_alarm_after_texts"] == streams["speeches"].alarm_after_texts
    assert figures["drift_false_alarm_rate"] is None  # the fixture pooled no validation texts: no trials
    text = "\n".join(_drift(SimpleNamespace(drift=report)))  # only `.drift` is read
    assert "## Drift" in text and "| one-class |" in text and "`drift_monitor_cpu_ratio_b1` = **" in text
