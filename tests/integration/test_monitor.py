"""Monitoring (issue 37): the observer's metrics, drift window and data collection; GET /monitor; export's references;
a real `bentoml serve` whose /metrics and /monitor move with what it answers on every route; `textclf monitor`."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tests.serving import serve_env, served
from textclf.artifacts.drift_reference import REFERENCE_NAME, SIGNALS
from textclf.artifacts.files import sha256_file
from textclf.artifacts.manifest import require_export, update_manifest, verify_files
from textclf.config import Config, load_config
from textclf.errors import ConfigError
from textclf.inference.predictions import predictions, softmax
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import TextOptions
from textclf.inference.variants import variants_on
from textclf.paths import EVAL_TEXTS, ONNX_DIR
from textclf.serving.batcher import Answer, GreedyBatcher
from textclf.serving.collect import COLUMNS, DataCollector
from textclf.serving.drift import DriftMonitor, DriftReference, load_reference
from textclf.serving.guard import RequestGuard
from textclf.serving.limits import Limits
from textclf.serving.monitoring import DRIFT_OFF, MONITOR_SCHEMA, ClassifierMetrics, DriftGauges, Monitoring
from textclf.serving.openapi import patch_openapi
from textclf.serving.protocols.common import AnswerOptions, Call
from textclf.serving.state import ModelState
from textclf_cli.app import app
from textclf_export.drift_reference import write_references

LABELS = ["neg", "pos"]
WINDOW = 100  # the smallest window serve.monitor_window takes: a few requests fill it
LONG = " ".join(["good film"] * 40)  # over the tiny model's 32 tokens: truncated


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Recorder:
    """bentoml.monitor's shape: a context manager whose monitor takes `log(value, name, role, type)`."""

    def __init__(self) -> None:
        self.records: list[list[tuple[Any, str, str, str]]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[Recorder]:
        self.records.append([])
        yield self

    def log(self, value: Any, name: str, role: str, kind: str) -> None:
        self.records[-1].append((value, name, role, kind))


def _observe(monitoring: Monitoring, texts: list[str], logits: list[list[float]], **options: Any) -> None:
    """One answered call of `texts` with these logits, scored as the pipeline scores it."""
    array = np.array(logits, dtype=np.float32)
    flags = [len(t) > 20 for t in texts]
    found = predictions(array, flags, LABELS, None, raw_scores=options.get("raw_scores", False), min_confidence=0.8)
    answer = Answer(array, flags, tokens=[len(t.split()) + 2 for t in texts])
    monitoring.observe(Call(texts, None, answer=AnswerOptions(**options)), found, answer)


def test_each_answered_text_is_counted_and_collected_without_its_text() -> None:
    registry, recorder = CollectorRegistry(), Recorder()
    collector = DataCollector(open_monitor=recorder)
    monitoring = Monitoring(LABELS, softmax, ClassifierMetrics(LABELS, registry), collector=collector)
    _observe(monitoring, ["a good film", "a dull and overlong plot, sadly"], [[0.0, 2.0], [1.0, 0.5]])
    _observe(monitoring, ["fine"], [[0.0, 3.0]], raw_scores=True)  # scores are logits; confidence stays a probability
    assert _value(registry, "textclf_predictions_total", label="pos") == 2
    assert _value(registry, "textclf_predictions_total", label="neg") == 1
    served = [softmax(np.array([row]))[0].max() for row in ([0.0, 2.0], [1.0, 0.5], [0.0, 3.0])]
    assert _value(registry, "textclf_confidence_sum") == pytest.approx(sum(served), abs=1e-6)
    assert _value(registry, "textclf_input_tokens_sum") == 5 + 8 + 3
    assert _value(registry, "textclf_truncated_total") == 1 and _value(registry, "textclf_abstained_total") == 1
    assert recorder.records == []  # the request path only queues
    assert collector.flush() == 3 and collector.flush() == 0 and len(recorder.records) == 1
    record = recorder.records[0]  # one record: each column a list over the texts, never the texts themselves
    assert [name for _, name, _, _ in record] == list(COLUMNS)
    columns = {name: value for value, name, _, _ in record}
    assert columns["label"] == ["pos", "neg", "pos"] and columns["confidence"] == pytest.approx(served)
    assert columns["input_tokens"] == [5, 8, 3] and columns["words"] == [3, 6, 1]
    assert columns["truncated"] == [False, True, False] and columns["abstained"] == [False, True, False]
    assert all(isinstance(t, float) for t in columns["answered_at"])
    texts, small = Recorder(), DataCollector(open_monitor=Recorder(), max_queued_texts=2)
    with_texts = DataCollector(with_texts=True, open_monitor=texts)
    for queue in (with_texts, small, small, small):
        queue.add((1.0, "pos", 0.9, None, 4, 2, False, "the text"))
    assert with_texts.flush() == 1 and texts.records[0][-1] == (["the text"], "text", "feature", "categorical")
    assert small.dropped == 1 and small.flush() == 2  # a full queue lets the oldest go, and counts it


def _eval_texts(cfg: Config) -> list[str]:
    return [json.loads(line)["text"] for line in (cfg.run_dir / EVAL_TEXTS).read_text().splitlines()]


@pytest.fixture(scope="module")
def monitored(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The exported run, copied, its references rewritten for a window of 100 texts as such an export writes them."""
    cfg = exported_run.model_copy(update={"artifacts_root": tmp_path_factory.mktemp("monitored") / "artifacts"})
    shutil.copytree(exported_run.run_dir, cfg.run_dir)
    export = require_export(cfg.run_dir)
    variants = dict(export.variants)
    cpu = [n for n in variants_on("cpu") if n in variants and variants[n].passed]
    classifiers = {n: Classifier(cfg.run_dir / ONNX_DIR / n, expected_files=variants[n].files) for n in cpu}
    write_references(cfg.run_dir / ONNX_DIR, variants, classifiers, _eval_texts(cfg), WINDOW)
    update_manifest(cfg.run_dir, export.model_copy(update={"variants": variants}))
    return cfg


def _reference(cfg: Config, classifier: Classifier) -> DriftReference:
    record = require_export(cfg.run_dir).variants[classifier.variant].drift_reference
    reference = load_reference(classifier.variant_dir, record, classifier.probabilities)
    assert reference is not None
    return reference


def test_export_writes_a_reference_for_each_passing_cpu_variant(exported_run: Config) -> None:
    export = require_export(exported_run.run_dir)
    for name, record in export.variants.items():
        if not (record.passed and name in variants_on("cpu")):
            assert record.drift_reference is None
            continue
        assert record.drift_reference is not None, f"{name}: no drift reference (run.py calls write_references?)"
        assert record.drift_reference.window == exported_run.serve.monitor_window
        assert record.drift_reference.texts == export.test_texts
        path = exported_run.run_dir / ONNX_DIR / name / REFERENCE_NAME
        assert record.files[REFERENCE_NAME].sha256 == record.drift_reference.sha256 == sha256_file(path)


def test_rewritten_references_fit_the_window_and_the_served_scores(monitored: Config) -> None:
    export = require_export(monitored.run_dir)
    name = export.serving_variant
    assert name is not None
    record = export.variants[name]
    verify_files(monitored.run_dir / ONNX_DIR / name, record.files)  # the reference is one of the variant's files
    assert record.bytes == sum(entry.bytes for entry in record.files.values())
    classifier = Classifier.from_run(monitored.run_dir)
    reference = _reference(monitored, classifier)
    served = [p.score for p in classifier.predict(_eval_texts(monitored))]
    assert reference.window == WINDOW
    assert reference.estimated_accuracy == pytest.approx(float(np.mean(served)), abs=1e-5)
    with pytest.raises(ConfigError, match=r"serve\.monitor_window is 1000.*window of 100"):
        Monitoring.for_worker(classifier, monitored.run_dir, monitored.serve)
    metrics = ClassifierMetrics(LABELS, CollectorRegistry())
    report = Monitoring(LABELS, softmax, metrics, drift=DriftMonitor(reference, WINDOW)).report()
    assert set(report) == set(MONITOR_SCHEMA["required"])  # the documented body is the one answered


def test_the_batcher_answers_the_tokens_the_model_read(monitored: Config) -> None:
    classifier = Classifier.from_run(monitored.run_dir)
    batcher = GreedyBatcher.from_config(classifier, monitored.serve)
    batcher.start()
    try:
        texts = ["a good film", LONG]
        expected = [len(e.ids) for e in classifier.encode(texts)]
        for policy in ("truncate", "chunk"):  # a text read in windows: its first window's, as `truncate` reads it
            answer = asyncio.run(batcher.submit(texts, TextOptions(on_overlength=policy)))
            assert answer.tokens == expected and expected[1] == classifier.max_seq_len, policy
    finally:
        batcher.close()


def test_monitor_route_drift_gauges_and_openapi(monitored: Config) -> None:
    classifier = Classifier.from_run(monitored.run_dir)
    state, registry = ModelState(), CollectorRegistry()
    client = TestClient(RequestGuard(Starlette(), limits=Limits(64, 2000, 100_000, 8), state=state))
    assert client.get("/monitor").status_code == 503  # the worker is still loading
    batcher = GreedyBatcher.from_config(classifier, monitored.serve)
    batcher.start()
    info = {"name": "textclf", "variant": classifier.variant, "sha256": "x", "labels": classifier.labels}
    pipeline = state.set_model({**info, "max_seq_len": 32}, batcher, classifier.predictions)
    reference = _reference(monitored, classifier)
    plain = Monitoring(classifier.labels, classifier.probabilities, ClassifierMetrics(classifier.labels, registry))
    plain.attach(pipeline)
    off = client.get("/monitor")
    assert off.status_code == 404 and off.json() == {"error": DRIFT_OFF, "error_type": "not_found"}
    pipeline.on_answer.clear()
    gauges = DriftGauges(registry)
    monitoring = Monitoring(
        classifier.labels,
        classifier.probabilities,
        ClassifierMetrics(classifier.labels, CollectorRegistry()),
        drift=DriftMonitor(reference, WINDOW),
        gauges=gauges,
        refresh_s=0.05,
    )
    try:
        monitoring.attach(pipeline)
        assert gauges.alarm._multiprocess_mode == "liveall"  # one series per worker: each has its own window
        assert math.isnan(registry.get_sample_value("textclf_drift_score", {"signal": "label_mix"}) or 0.0)
        texts = _eval_texts(monitored)
        for start in range(0, WINDOW, 10):  # a full window of the reference's own texts: no alarm
            chunk = [texts[i % len(texts)] for i in range(start, start + 10)]
            assert client.post("/predict", json={"texts": chunk}).status_code == 200
        time.sleep(1.05)  # the report is reused for up to a second (the gauges showed it at start)
        report = client.get("/monitor").json()
        assert report["worker_pid"] == os.getpid() and report["window_size"] == WINDOW and report["texts"] == WINDOW
        assert not report["alarm"] and all(s["score"] < 1 for s in report["signals"].values())
        for _ in range(WINDOW // 10):  # then a window of long texts
            assert client.post("/predict", json={"texts": [LONG] * 10}).status_code == 200
        time.sleep(1.05)  # past the report's one-second reuse
        shifted = client.get("/monitor").json()
        assert shifted["alarm"] and shifted["signals"]["input_tokens"]["score"] > 1
        deadline = time.monotonic() + 5
        while _value(registry, "textclf_drift_alarm") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the refresher thread shows it within refresh_s
        assert _value(registry, "textclf_drift_score", signal="input_tokens") > 1
        assert _value(registry, "textclf_estimated_accuracy") == pytest.approx(shifted["estimated_accuracy"])
        refused = client.post("/monitor")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    finally:
        monitoring.close()
        batcher.close()
    doc = patch_openapi({"paths": {}}, Limits(64, 2000, 100_000, 8), has_keys=False)["paths"]["/monitor"]["get"]
    assert doc["responses"]["200"]["content"]["application/json"]["schema"] is MONITOR_SCHEMA
    assert "drift reference" in doc["responses"]["404"]["description"]


@pytest.mark.parametrize("window", ["99", "100001"])
def test_a_window_out_of_range_is_a_config_error_naming_the_key(window: str) -> None:
    with pytest.raises(ConfigError, match=r"serve\.monitor_window"):
        load_config(environ={"TEXTCLF_MONITOR_WINDOW": window})


def test_the_alert_rules_read_the_gauges_the_service_writes() -> None:
    path = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "monitoring" / "prometheus-rule.yaml"
    rule = yaml.safe_load(path.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    registry = CollectorRegistry()
    DriftGauges(registry)  # the names below are the ones the service writes
    written = {family.name for family in registry.collect()}
    accuracy = {"textclf_estimated_accuracy", "textclf_reference_estimated_accuracy"}
    assert "textclf_drift_alarm" in written and accuracy <= written
    assert (
        "max(textclf_drift_alarm)" in alerts["TextclfInputDrift"]["expr"]
        and alerts["TextclfInputDrift"]["for"] == "10m"
    )
    assert all(name in alerts["TextclfEstimatedAccuracyDrop"]["expr"] for name in accuracy)
    assert "5.." in alerts["TextclfServerErrors"]["expr"]


# -- a real server ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(monitored: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("bentoml-home")
    logs = home / "monitoring"  # BentoML's data collection, away from the checkout
    env = serve_env(monitored.run_dir, home, monitor_window=str(WINDOW), max_texts_per_request="16")
    env["BENTOML_CONFIG_OPTIONS"] = f"services.monitoring.options.log_path={logs}"
    with served("service:TextClassifier", env, home / "serve.log") as url:
        yield url, logs


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_route_counts_its_texts_on_metrics(server: tuple[str, Path], monitored: Config) -> None:
    url, _ = server
    texts = ["a good film", "a dull plot", LONG]
    tokens = [len(e.ids) for e in Classifier.from_run(monitored.run_dir).encode(texts)]
    before = _metrics(url)
    assert requests.post(f"{url}/predict", json={"texts": texts}, timeout=30).status_code == 200
    assert requests.post(f"{url}/", json={"inputs": texts}, timeout=30).status_code == 200
    v2: dict[str, Any] = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}]}
    assert requests.post(f"{url}/v2/models/textclf/infer", json=v2, timeout=30).status_code == 200
    after = _metrics(url)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    counted = sum(grew("textclf_predictions_total", label=label) for label in ("neg", "pos"))
    assert counted == 9 and grew("textclf_confidence_count") == 9 and grew("textclf_truncated_total") == 3
    assert grew("textclf_input_tokens_sum") == 3 * sum(tokens)
    assert ("textclf_abstained_total", ()) in after  # present, at 0: no selective threshold here
    assert {key[1] for key in after if key[0] == "textclf_drift_score"} == {(("signal", s),) for s in SIGNALS}


def test_a_shifted_stream_raises_the_alarm_and_textclf_monitor_flags_it(
    server: tuple[str, Path], monitored: Config, tmp_path: Path
) -> None:
    url, logs = server
    texts = _eval_texts(monitored)
    for start in range(0, WINDOW, 16):
        batch = [texts[i % len(texts)] for i in range(start, min(start + 16, WINDOW))]
        assert requests.post(f"{url}/predict", json={"texts": batch}, timeout=30).status_code == 200
    time.sleep(1.05)
    calm = requests.get(f"{url}/monitor", timeout=10).json()
    assert calm["texts"] == WINDOW and not calm["alarm"], calm
    for _ in range(0, WINDOW, 10):
        assert requests.post(f"{url}/predict", json={"texts": [LONG] * 10}, timeout=30).status_code == 200
    time.sleep(1.05)
    alarmed = requests.get(f"{url}/monitor", timeout=10).json()
    assert alarmed["alarm"] and alarmed["signals"]["input_tokens"]["score"] > 1, alarmed
    deadline = time.monotonic() + 5
    while _metrics(url).get(("textclf_drift_alarm", ())) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metrics(url)[("textclf_drift_alarm", ())] == 1
    assert _collected(logs, 2 * WINDOW)[-1].keys() >= {*COLUMNS, "timestamp"}  # one record a second, column-wise
    out = tmp_path / "report"
    result = _monitor_cli(monitored, "--data", logs, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "monitor.json").read_text())
    assert report["time_ordered"] and report["alarms"] >= 1 and "input_tokens" in report["first_alarm"]["signals"]
    assert (out / "monitor.md").read_text().startswith("# Drift") and (out / "monitor.png").stat().st_size > 0


def _collected(logs: Path, texts: int) -> list[dict[str, Any]]:
    """The records BentoML's data collection wrote, once they hold `texts` texts (the worker writes every second)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for path in logs.rglob("data.*.log") for line in path.read_text().splitlines()]
        records = [json.loads(line) for line in lines]
        written = sum(len(r["label"]) for r in records)
        if written >= texts:
            assert all("text" not in r for r in records)  # serve.monitor_texts is off
            return records
        assert time.monotonic() < deadline, f"{written} texts collected, {texts} expected"
        time.sleep(0.2)


def _monitor_cli(cfg: Config, *args: str | Path) -> Any:
    return CliRunner().invoke(app, ["monitor", "--set", f"artifacts_root={cfg.artifacts_root}", *map(str, args)])


def test_textclf_monitor_reads_a_predict_output_and_names_missing_columns(monitored: Config, tmp_path: Path) -> None:
    texts = _eval_texts(monitored)
    calm = [texts[i % len(texts)] for i in range(WINDOW)]
    rows = [(text, "x") for text in [*calm, *[LONG] * WINDOW]]
    source = tmp_path / "in.csv"
    source.write_text("text,tag\n" + "".join(f'"{t}",{g}\n' for t, g in rows))
    predicted = tmp_path / "out.csv"
    args = ["predict", "--set", f"artifacts_root={monitored.artifacts_root}", "-i", source, "-o", predicted]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    result = _monitor_cli(monitored, "--data", predicted, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "monitor.json").read_text())
    assert [w["alarm"] for w in report["windows"]] == [False, True] and not report["time_ordered"]
    assert report["first_alarm"]["after_texts"] == 2 * WINDOW
    bare = tmp_path / "bare.csv"
    bare.write_text("label,score\npos,0.9\n")
    result = _monitor_cli(monitored, "--data", bare, "--out", tmp_path / "bare")
    assert result.exit_code == 2 and "input_tokens" in result.output and "words" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_run_without_a_reference_serves_without_drift(monitored: Config, tmp_path: Path) -> None:
    old = tmp_path / "artifacts" / "default"
    shutil.copytree(monitored.run_dir, old)
    export = require_export(old)
    stripped = {}
    for name, record in export.variants.items():
        files = {k: v for k, v in record.files.items() if k != REFERENCE_NAME}
        stripped[name] = record.model_copy(update={"drift_reference": None, "files": files})
        (old / ONNX_DIR / name / REFERENCE_NAME).unlink(missing_ok=True)
    update_manifest(old, export.model_copy(update={"variants": stripped}))
    home = tmp_path / "home"
    env = serve_env(old, home) | {"BENTOML_CONFIG_OPTIONS": f"services.monitoring.options.log_path={home / 'logs'}"}
    with served("service:TextClassifier", env, home / "serve.log") as url:
        off = requests.get(f"{url}/monitor", timeout=10)
        assert off.status_code == 404 and off.json()["error_type"] == "not_found"
        assert requests.post(f"{url}/predict", json={"texts": ["a good film"]}, timeout=30).status_code == 200
        names = {name for name, _ in _metrics(url)}
        assert "textclf_predictions_total" in names and "textclf_drift_alarm" not in names
    assert (home / "serve.log").read_text().count("drift monitoring is off") == 1  # said once, at start
