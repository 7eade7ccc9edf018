"""Experiment trackers (MLflow, TensorBoard, Weights & Biases): where each one's run lives, whether its server can
be reached, and one small writer per tracker for what only textclf knows (data, gates, headline figures, files).

`textclf train` starts the runs (`textclf_train.tracking`); the CLI opens the same runs again after `export` and
`report` (`textclf_cli.tracking`) with `open_runs`. The tracker packages are imported only inside these functions,
and the core (what the Bento ships) never imports this module.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Protocol

from textclf.artifacts.schema import TrackedRun, TrackingSection
from textclf.config import Tracker

logger = logging.getLogger(__name__)

TRACKING_DIR: Final = "tracking"  # artifacts/<run>/tracking/: the offline stores
MLFLOW_DB: Final = "mlflow.db"
MLFLOW_ARTIFACTS_DIR: Final = "mlartifacts"
TENSORBOARD_DIR: Final = "tensorboard"  # one event folder per training below it
DEFAULT_EXPERIMENT: Final = "textclf"  # MLflow experiment / W&B project unless the environment names one
PROBE_TIMEOUT_S: Final = 5.0
_TRACKING_EXTRA = "pip install -e '.[tracking]'"
INSTALL_HINTS: Final[dict[Tracker, str]] = {
    "mlflow": _TRACKING_EXTRA,
    "tensorboard": _TRACKING_EXTRA,
    # W&B is the user's own account and install: the `tracking` extra leaves it out.
    "wandb": "pip install wandb (then `wandb login`, or WANDB_MODE=offline)",
}
_WANDB_OFFLINE_MODES = ("offline", "disabled", "dryrun")


def missing_package(tracker: Tracker) -> str | None:
    """The install line for a tracker whose package is not importable here, or None when it is."""
    return None if importlib.util.find_spec(tracker) is not None else INSTALL_HINTS[tracker]


def wandb_unconfigured() -> str | None:
    """Why W&B would stop to ask for a login (an API key nowhere, not offline), or None when it would not."""
    if os.environ.get("WANDB_MODE", "").lower() in _WANDB_OFFLINE_MODES or os.environ.get("WANDB_API_KEY"):
        return None
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        if netrc.netrc().authenticators(host):  # where `wandb login` keeps the key
            return None
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "W&B has no API key here: run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline"


def run_store_uri(run_dir: Path) -> str:
    """The run's own MLflow store: a SQLite file under `artifacts/<run>/tracking/` (the folder is made here).

    MLflow 3 refuses a bare `./mlruns` file store (3.17.2 does), so the offline default is a database.
    """
    store = (run_dir / TRACKING_DIR / MLFLOW_DB).resolve()
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}"


def mlflow_tracking_uri(run_dir: Path) -> tuple[str, bool]:
    """`(uri, is_run_store)` for a new training: MLFLOW_TRACKING_URI when set, otherwise the run's own store."""
    chosen = os.environ.get("MLFLOW_TRACKING_URI")
    return (chosen, False) if chosen else (run_store_uri(run_dir), True)


def recorded_mlflow_uri(run_dir: Path, record: TrackedRun) -> str:
    """Where a recorded MLflow run lives: the URI the training used, whatever MLFLOW_TRACKING_URI says now."""
    return record.location or run_store_uri(run_dir)


def server_url(tracker: Tracker, location: str | None) -> str | None:
    """The URL that says whether a tracker's server is up, or None where it keeps its runs in local files."""
    if tracker == "mlflow" and location and urllib.parse.urlparse(location).scheme in ("http", "https"):
        return location.rstrip("/") + "/health"
    if tracker == "wandb" and os.environ.get("WANDB_MODE", "").lower() not in _WANDB_OFFLINE_MODES:
        return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    return None


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Ask `url` once: None when a server answers (any HTTP status), otherwise why it cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # a status code is an answer: the server is there, whatever it thinks of this path
    except urllib.error.URLError as exc:
        return f"{url}: {exc.reason}"
    except (OSError, ValueError) as exc:  # a timeout mid-answer, a malformed URL
        return f"{url}: {exc}"


def mlflow_experiment_id(client: Any, run_dir: Path, is_run_store: bool) -> str:
    """The experiment textclf's runs go in: MLFLOW_EXPERIMENT_NAME or `textclf`, created when missing.

    In the run's own store its artifacts go under `artifacts/<run>/tracking/mlartifacts`: MLflow's default would
    be `./mlruns` under whatever folder the command ran in.
    """
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = (run_dir / TRACKING_DIR / MLFLOW_ARTIFACTS_DIR).resolve().as_uri() if is_run_store else None
    return str(client.create_experiment(name, artifact_location=location))


class RunWriter(Protocol):
    """What textclf writes to one tracker's run beside the Trainer's own logging."""

    tracker: Tracker

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_files(self, files: Sequence[Path], artifact_dir: str) -> None: ...

    def log_model(self, name: str, folder: Path, files: Sequence[str], params: Mapping[str, str]) -> None: ...

    def close(self) -> None: ...


class MlflowWriter:
    """An MLflow run, through `MlflowClient` (no fluent global state: the run may be someone else's active one)."""

    tracker: Tracker = "mlflow"

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        self.client.get_run(run_id)  # a run id the store does not know fails here, not at the first metric

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        rows = [Metric(key, float(value), now_ms, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=rows)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def log_files(self, files: Sequence[Path], artifact_dir: str) -> None:
        for path in files:
            self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_model(self, name: str, folder: Path, files: Sequence[str], params: Mapping[str, str]) -> None:
        """The files as an MLflow 3 logged model of this run (its outputs), each at its path inside `folder`."""
        from mlflow.entities import LoggedModelOutput

        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        model = self.client.create_logged_model(
            experiment_id, name=name, source_run_id=self.run_id, params=dict(params), model_type="textclf"
        )
        for relative in files:
            parent = Path(relative).parent.as_posix()
            self.client.log_model_artifact(model.model_id, str(folder / relative), None if parent == "." else parent)
        self.client.finalize_logged_model(model.model_id, "READY")
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])

    def close(self) -> None:
        pass  # the client holds no run open; `textclf train` ends its own run itself


class TensorBoardWriter:
    """Event files in the training's folder: numbers as scalars, tags as text, PNGs as images (no other files)."""

    tracker: Tracker = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = EventFileWriter(str(log_dir), filename_suffix=".textclf")

    def _write(self, values: list[Any], step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write([Summary.Value(tag=key, simple_value=float(value)) for key, value in metrics.items()], step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        for key, value in tags.items():
            self._write(list(text_pb(key, value).value), 0)

    def log_files(self, files: Sequence[Path], artifact_dir: str) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        for path in files:
            if path.suffix.lower() != ".png":
                logger.debug("tensorboard keeps no files: %s stays out", path.name)
                continue
            data = path.read_bytes()
            # A PNG's size is in its IHDR chunk, big-endian, right after the 16-byte signature + chunk header.
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=data)
            self._write([Summary.Value(tag=f"{artifact_dir}/{path.name}", image=image)], 0)

    def log_model(self, name: str, folder: Path, files: Sequence[str], params: Mapping[str, str]) -> None:
        pass  # TensorBoard has no model store; the manifest and the BentoML store hold the files

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """A W&B run: numbers and tags in its summary (its step axis belongs to the Trainer), PNGs as images, the
    served variant as a model artifact."""

    tracker: Tracker = "wandb"

    def __init__(self, run: Any, *, owns_run: bool) -> None:
        self.run = run
        self._owns_run = owns_run

    @classmethod
    def reopen(cls, record: TrackedRun, run_dir: Path) -> WandbWriter:
        import wandb

        entity, _, project = (record.location or "").rpartition("/")
        run = wandb.init(
            id=record.run_id,
            project=project or DEFAULT_EXPERIMENT,
            entity=entity or None,
            resume="allow",
            dir=str(run_dir / TRACKING_DIR),
        )
        return cls(run, owns_run=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(metrics))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.run.summary.update(dict(tags))

    def log_files(self, files: Sequence[Path], artifact_dir: str) -> None:
        import wandb

        images = {f"{artifact_dir}/{p.name}": wandb.Image(str(p)) for p in files if p.suffix.lower() == ".png"}
        if images:
            self.run.log(images, commit=True)

    def log_model(self, name: str, folder: Path, files: Sequence[str], params: Mapping[str, str]) -> None:
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=dict(params))
        for relative in files:
            artifact.add_file(str(folder / relative), name=relative)
        self.run.log_artifact(artifact)

    def close(self) -> None:
        if self._owns_run:
            self.run.finish()


class TrackedRuns:
    """Every writer of one run at once. A writer that fails is warned about once and dropped: a tracker never
    fails the stage it records."""

    def __init__(self, writers: Sequence[RunWriter]) -> None:
        self.writers = list(writers)

    def __bool__(self) -> bool:
        return bool(self.writers)

    def _each(self, action: str, call: Any) -> None:
        for writer in list(self.writers):
            try:
                call(writer)
            except Exception as exc:  # any tracker failure: network, store, quota
                logger.warning(
                    "%s: %s failed (%s); no more tracking to it in this command", writer.tracker, action, exc
                )
                self.writers.remove(writer)
                _close_quietly(writer)

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Numbers (None ones left out) at `step`."""
        present = {key: float(value) for key, value in metrics.items() if value is not None}
        if present:
            self._each("logging metrics", lambda w: w.log_metrics(present, step))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Words and hashes, replacing the values an earlier stage set under the same keys."""
        if tags:
            self._each("setting tags", lambda w: w.set_tags(tags))

    def log_files(self, files: Sequence[Path], artifact_dir: str) -> None:
        """Files that exist, under `artifact_dir` of the run's artifacts."""
        present = [path for path in files if path.is_file()]
        if present:
            self._each("logging files", lambda w: w.log_files(present, artifact_dir))

    def log_model(self, name: str, folder: Path, files: Sequence[str], params: Mapping[str, str]) -> None:
        """`files` (paths inside `folder`) as the run's model, where the tracker has a model store."""
        self._each("logging the model", lambda w: w.log_model(name, folder, files, params))

    def close(self) -> None:
        for writer in self.writers:
            _close_quietly(writer)
        self.writers = []


def _close_quietly(writer: RunWriter) -> None:
    try:
        writer.close()
    except Exception as exc:  # closing must not hide the result of the stage
        logger.warning("%s: closing the run failed: %s", writer.tracker, exc)


def _reopen(tracker: Tracker, record: TrackedRun, run_dir: Path) -> RunWriter:
    if tracker == "mlflow":
        return MlflowWriter(recorded_mlflow_uri(run_dir, record), record.run_id)
    if tracker == "tensorboard":
        return TensorBoardWriter(run_dir / (record.location or TENSORBOARD_DIR))
    return WandbWriter.reopen(record, run_dir)


@contextmanager
def open_runs(run_dir: Path, section: TrackingSection | None, stage: str) -> Iterator[TrackedRuns]:
    """The runs `textclf train` recorded, open for `stage` to log to; those that cannot be reached are left out
    with one warning each (their package is missing, the server does not answer within PROBE_TIMEOUT_S)."""
    writers: list[RunWriter] = []
    records: dict[Tracker, TrackedRun | None] = (
        {"mlflow": section.mlflow, "tensorboard": section.tensorboard, "wandb": section.wandb} if section else {}
    )
    for tracker, record in records.items():
        if record is None:
            continue
        location = recorded_mlflow_uri(run_dir, record) if tracker == "mlflow" else record.location
        hint = missing_package(tracker)
        url = server_url(tracker, location)
        reason = f"its package is not installed here ({hint})" if hint else (probe(url) if url else None)
        if reason is None:
            try:
                writers.append(_reopen(tracker, record, run_dir))
                continue
            except Exception as exc:  # a deleted store, a run id the server does not know
                reason = str(exc)
        logger.warning("%s: %s is not recorded in run %s: %s", tracker, stage, record.run_id, reason)
    runs = TrackedRuns(writers)
    try:
        yield runs
    finally:
        runs.close()
