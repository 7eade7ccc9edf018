"""Experiment tracking (`train.report_to`): a tiny training, its export and its report all land in one MLflow run
and one TensorBoard run, read back through MLflow's own client and TensorBoard's event reader; trackers that cannot
run are refused before training, and servers that do not answer turn tracking off without stopping anything."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from typer.testing import CliRunner, Result

from tests.artifacts import export_section, train_section
from textclf.artifacts.manifest import read_manifest, require_export, require_train, update_manifest
from textclf.artifacts.records import load_report
from textclf.artifacts.schema import TrackedRun, TrackingSection
from textclf.paths import MANIFEST_NAME, RESULTS_JSON
from textclf_benchmarks.schema import Results
from textclf_cli.app import app
from textclf_cli.tracking import gate_metrics, headline_figures, log_export
from textclf_train import trackers

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

REPO = Path(__file__).resolve().parents[2]
COMMITTED_REPORT = REPO / "reports" / "xeon" / "default"  # with bulk.json and bench-cuda.json
RUN = "tracked"
LOGGING_STEPS = 5
# The environment variables that would send the runs elsewhere than the run's own offline stores.
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN")


class Tracked(NamedTuple):
    artifacts: Path
    reports: Path
    outputs: dict[str, Result]

    @property
    def run_dir(self) -> Path:
        return self.artifacts / RUN


def _overrides(root: Path, base: Path, data: Path, *extra: str) -> list[str]:
    settings = [
        f"artifacts_root={root / 'artifacts'}",
        f"reports_root={root / 'reports'}",
        f"run={RUN}",
        f"data.path={data}",
        f"train.base_model={base}",
        "train.epochs=2",
        "train.batch_size=8",
        "train.learning_rate=0.003",
        "train.warmup_ratio=0",
        "train.max_seq_len=32",
        "train.num_threads=1",
        f"train.logging_steps={LOGGING_STEPS}",
        *extra,
    ]
    return [item for setting in settings for item in ("--set", setting)]


def _invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_csv: Path) -> Iterator[Tracked]:
    """`textclf train` with MLflow and TensorBoard, then `export` (two variants) and `report` (from the committed
    bench, load and bulk files) of the same run, all through the CLI."""
    root = tmp_path_factory.mktemp("tracked")
    settings = _overrides(
        root,
        tiny_base,
        tiny_csv,
        "train.report_to=[mlflow, tensorboard]",
        "export.variants=[fp32, int8-dynamic]",
        "export.timing_seconds=0.2",
        "export.route_long_calls=false",
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in _MLFLOW_ENV:
            patch.delenv(name, raising=False)
        patch.chdir(root)  # MLflow's default artifact folder would be ./mlruns here: it must stay empty
        outputs = {"train": _invoke("train", *settings)}
        # Export and report go to the run the training recorded, whatever the environment says by then.
        elsewhere = root / "elsewhere.db"
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
        outputs["export"] = _invoke("export", *settings)
        reports = root / "reports" / RUN
        reports.mkdir(parents=True)
        for name in ("bench.json", "load.json", "bulk.json", "bench-cuda.json"):
            shutil.copy(COMMITTED_REPORT / name, reports / name)
        outputs["report"] = _invoke("report", *settings)
        assert not (root / "mlruns").exists(), "MLflow wrote outside the run's folder"
        assert not elsewhere.exists(), "export or report followed MLFLOW_TRACKING_URI away from the recorded run"
    yield Tracked(root / "artifacts", reports, outputs)


def _mlflow(tracked: Tracked) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    record = require_train(tracked.run_dir).tracking
    assert record is not None and record.mlflow is not None
    assert record.mlflow.location is None, "the offline default is the run's own store"
    uri = trackers.recorded_mlflow_uri(tracked.run_dir, record.mlflow)
    assert uri == f"sqlite:///{(tracked.run_dir / 'tracking' / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri), record.mlflow.run_id


def test_training_export_and_report_are_one_mlflow_run(tracked: Tracked) -> None:
    client, run_id = _mlflow(tracked)
    experiment = client.get_experiment_by_name(trackers.DEFAULT_EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [run_id], "train, export and report share one run"
    run = client.get_run(run_id)
    assert run.info.run_name == RUN and run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((tracked.run_dir / "tracking" / "mlartifacts").resolve().as_uri())

    # Training: the Trainer's loss at every logging step, then the data and final metrics textclf adds.
    train = require_train(tracked.run_dir)
    losses = client.get_metric_history(run_id, "loss")
    assert [m.step for m in losses] == list(range(LOGGING_STEPS, train.trainer.global_steps + 1, LOGGING_STEPS))
    assert len(client.get_metric_history(run_id, "eval_macro_f1")) == len(train.trainer.validation_history)
    metrics, tags = run.data.metrics, run.data.tags
    for name, split in train.data.splits.items():
        assert metrics[f"data/{name}_rows"] == split.rows
        assert tags[f"data.{name}.sha256"] == split.sha256
    assert metrics["test/accuracy"] == pytest.approx(train.metrics.test.accuracy)
    assert metrics["validation/macro_f1"] == pytest.approx(train.metrics.validation.macro_f1)

    # Export: every variant's gates and the serving choice, as the manifest records them.
    export = require_export(tracked.run_dir)
    assert set(export.variants) == {"fp32", "int8-dynamic"}
    for name, variant in export.variants.items():
        for key, value in gate_metrics(name, variant).items():
            if value is not None:
                assert metrics[key] == pytest.approx(value), key
        assert tags[f"export.{name}.reason"] == variant.reason
        assert tags[f"export.{name}.passed"] == str(variant.passed)
    assert metrics["export/fp32/parity_max_abs_diff"] <= 1e-4
    assert metrics["export/fp32/batch_invariance_flips"] == 0
    assert export.serving_variant is not None and tags["export.serving_variant"] == export.serving_variant

    # Report: the headline's figures, and report.md, results.json and every PNG as artifacts.
    results = load_report(tracked.reports / RESULTS_JSON, Results)
    numbers, words = headline_figures(results.headline)
    assert numbers and words
    for key, value in numbers.items():
        if value is not None:
            assert metrics[key] == pytest.approx(value), key
    assert all(tags[key] == value for key, value in words.items())
    assert metrics["report/speedup_b1_real"] == pytest.approx(results.headline.speedup_b1_real)
    logged = {info.path for info in client.list_artifacts(run_id, "report")}
    expected = {f"report/{name}" for name in ["report.md", RESULTS_JSON, *results.plots]}
    assert results.plots and logged == expected
    assert {info.path for info in client.list_artifacts(run_id, "export")} == {f"export/{MANIFEST_NAME}"}
    assert {info.path for info in client.list_artifacts(run_id, "train")} == {"train/confusion_matrix.png"}


def test_the_served_variant_is_the_runs_mlflow_model(tracked: Tracked) -> None:
    from mlflow.entities import LoggedModelStatus

    client, run_id = _mlflow(tracked)
    export = require_export(tracked.run_dir)
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id])
    assert [model.name for model in models] == [f"{RUN}-{name}" for name in export.served_variants()]
    model = models[0]
    assert model.source_run_id == run_id and model.params["variant"] == export.serving_variant
    assert model.status == LoggedModelStatus.READY
    files = export.variants[str(export.serving_variant)].files
    listed = {info.path for info in client.list_logged_model_artifacts(model.model_id)}
    assert {path.split("/")[0] for path in files} == listed
    outputs = client.get_run(run_id).outputs
    assert outputs is not None and [out.model_id for out in outputs.model_outputs] == [model.model_id]


def test_tensorboard_holds_the_same_run(tracked: Tracked) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = require_train(tracked.run_dir).tracking
    assert record is not None and record.tensorboard is not None and record.tensorboard.location
    folder = tracked.run_dir / record.tensorboard.location
    assert folder.name == record.tensorboard.run_id
    assert [p.name for p in (tracked.run_dir / "tracking" / "tensorboard").iterdir()] == [folder.name]
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()

    train = require_train(tracked.run_dir)
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps == list(range(LOGGING_STEPS, train.trainer.global_steps + 1, LOGGING_STEPS))
    assert events.Scalars("data/train_rows")[0].value == train.data.splits["train"].rows
    export = require_export(tracked.run_dir)
    for name, variant in export.variants.items():
        assert events.Scalars(f"export/{name}/passed")[-1].value == float(variant.passed)
        if variant.latency_ms is not None:
            assert events.Scalars(f"export/{name}/latency_ms")[-1].value == pytest.approx(variant.latency_ms)
    serving = events.Tensors("export.serving_variant")[-1].tensor_proto.string_val[0].decode()
    assert serving == export.serving_variant
    assert "data.test.sha256" in tags["tensors"]

    results = load_report(tracked.reports / RESULTS_JSON, Results)
    assert events.Scalars("report/speedup_b1_real")[-1].value == pytest.approx(results.headline.speedup_b1_real)
    assert {f"report/{name}" for name in results.plots} <= set(tags["images"])
    image = events.Images(f"report/{results.plots[0]}")[-1]
    assert image.encoded_image_string == (tracked.reports / results.plots[0]).read_bytes()
    assert image.width > 0 and image.height > 0


def test_train_says_where_it_tracks(tracked: Tracked) -> None:
    record = require_train(tracked.run_dir).tracking
    assert record is not None and record.mlflow is not None and record.wandb is None
    manifest = read_manifest(tracked.run_dir)
    assert manifest is not None and manifest.config["train"]["report_to"] == ["mlflow", "tensorboard"]


# -- bad input ---------------------------------------------------------------------------------------------------
def test_missing_tracker_package_stops_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_base: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    # The data file does not exist: reading it would fail with another error, so the tracker check came first.
    settings = _overrides(tmp_path, tiny_base, tmp_path / "absent.csv", "train.report_to=mlflow,tensorboard")
    result = CliRunner().invoke(app, ["train", *settings])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0]
    assert "mlflow is not installed: pip install -e '.[tracking]'" in lines[0]
    assert "tensorboard" not in lines[0].split(":", 2)[-1], "only the missing tracker is named"
    assert not (tmp_path / "artifacts" / RUN / MANIFEST_NAME).exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_is_the_users_own_install(tmp_path: Path, tiny_base: Path) -> None:
    settings = _overrides(tmp_path, tiny_base, tmp_path / "absent.csv", "train.report_to=wandb")
    result = CliRunner().invoke(app, ["train", *settings])
    assert result.exit_code == 2
    assert "wandb is not installed: pip install wandb" in result.output


def test_unknown_tracker_is_a_config_error_listing_the_valid_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "--set", "train.report_to=[mlflow, comet]"])
    assert result.exit_code == 2
    assert "train.report_to" in result.output and "unknown tracker(s) ['comet']" in result.output
    assert "valid: none, tensorboard, mlflow, wandb" in result.output


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_turns_tracking_off_and_training_goes_on(
    offline_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_base: Path,
    tiny_csv: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from textclf.config import load_config
    from textclf_train.run import run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    cfg = load_config(
        overrides=[
            item
            for item in _overrides(tmp_path, tiny_base, tiny_csv, "train.report_to=[mlflow, tensorboard]")
            if item != "--set"
        ]
        + ["train.epochs=0.25"],
        environ={},
    )
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        run(cfg, cfg.run_dir)
    assert time.perf_counter() - started < 120, "nothing waited on the server (MLflow's own retries take minutes)"
    train = require_train(cfg.run_dir)
    assert train.trainer.global_steps > 0
    # Only the tracker whose server is away is off; TensorBoard, which needs none, still has its run.
    assert train.tracking is not None and train.tracking.mlflow is None and train.tracking.tensorboard is not None
    said = [r.getMessage() for r in caplog.records if "tracking is off" in r.getMessage()]
    assert len(said) == 1 and "mlflow" in said[0] and "does not answer" in said[0] and "127.0.0.1" in said[0]


def test_each_training_starts_a_new_run(offline_env: None, tmp_path: Path, tiny_base: Path, tiny_csv: Path) -> None:
    from mlflow.tracking import MlflowClient

    from textclf.config import load_config
    from textclf_train.run import run

    settings = [item for item in _overrides(tmp_path, tiny_base, tiny_csv, "train.report_to=mlflow") if item != "--set"]
    cfg = load_config(overrides=[*settings, "train.epochs=0.25"], environ={})
    ids = []
    for _ in range(2):
        run(cfg, cfg.run_dir)
        tracking = require_train(cfg.run_dir).tracking
        assert tracking is not None and tracking.mlflow is not None and tracking.tensorboard is None
        ids.append(tracking.mlflow.run_id)
    assert ids[0] != ids[1]
    client = MlflowClient(trackers.run_store_uri(cfg.run_dir))
    experiment = client.get_experiment_by_name(trackers.DEFAULT_EXPERIMENT)
    assert experiment is not None
    assert {run.info.run_id for run in client.search_runs([experiment.experiment_id])} == set(ids)
    assert all(client.get_run(run_id).info.run_name == RUN for run_id in ids)


def test_export_to_an_unreachable_run_warns_once_and_finishes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from textclf.config import load_config

    run_dir = tmp_path / RUN
    server = f"http://127.0.0.1:{_closed_port()}"
    tracking = TrackingSection(
        mlflow=TrackedRun(run_id="r1", location=server),
        tensorboard=TrackedRun(run_id="t1", location="tracking/tensorboard/t1"),
    )
    update_manifest(run_dir, train_section().model_copy(update={"tracking": tracking}))
    update_manifest(run_dir, export_section())
    cfg = load_config(overrides=[f"artifacts_root={tmp_path}", f"run={RUN}"], environ={})
    with caplog.at_level(logging.WARNING):
        log_export(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "mlflow: export is not recorded in run r1" in warnings[0] and server in warnings[0]
    # TensorBoard, which needs no server, still got the gates.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tracking" / "tensorboard" / "t1"))
    events.Reload()
    assert events.Scalars("export/fp32/parity_max_abs_diff")[0].value == pytest.approx(1e-6)


# -- the probe ------------------------------------------------------------------------------------------------------
class _Answers404(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_probe_counts_any_answer_and_gives_up_at_its_timeout() -> None:
    assert trackers.PROBE_TIMEOUT_S == 5.0
    server = HTTPServer(("127.0.0.1", 0), _Answers404)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        assert trackers.probe(f"http://127.0.0.1:{server.server_port}/health") is None, "a 404 is an answer"
    finally:
        thread.join(5)
        server.server_close()
    assert "refused" in str(trackers.probe(f"http://127.0.0.1:{_closed_port()}/health")).lower()
    # A server that takes the connection and never answers: the probe waits its timeout and no more.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.perf_counter()
        reason = trackers.probe(f"http://127.0.0.1:{silent.getsockname()[1]}/health", timeout_s=0.5)
        assert reason is not None and time.perf_counter() - started < 3


def test_server_url_probes_only_servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert trackers.server_url("mlflow", "http://mlflow.internal:5000/") == "http://mlflow.internal:5000/health"
    assert trackers.server_url("mlflow", f"sqlite:///{tmp_path}/m.db") is None
    assert trackers.server_url("tensorboard", None) is None
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert trackers.server_url("wandb", None) is None
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.internal")
    assert trackers.server_url("wandb", None) == "http://wandb.internal"
