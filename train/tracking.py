"""`train.report_to` for one training: trackers checked before any work, one new run per tracker named after
textclf's run, the Trainer's own logging into those runs, then the data and final metrics, and the run ids for the
manifest (`train.tracking.<tracker>.run_id`), where `export` and `report` find them again.

How the Hugging Face callbacks pick the runs up (transformers 4.57): `MLflowCallback` logs into the active fluent
run when there is one and then leaves it open (it only ends runs it started itself), and it starts a second run
when MLFLOW_RUN_ID or MLFLOW_NESTED_RUN is set, so those two are set aside while textclf's run is open;
`WandbCallback` reuses `wandb.run` when one is active; `TensorBoardCallback` writes to `TrainingArguments.logging_dir`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textclf.artifacts.schema import DataRecord, TrackedRun, TrackingSection, TrainMetrics
from textclf.config import Config, Tracker
from textclf.errors import ConfigError
from textclf_train.trackers import (
    DEFAULT_EXPERIMENT,
    TENSORBOARD_DIR,
    TRACKING_DIR,
    MlflowWriter,
    RunWriter,
    TensorBoardWriter,
    TrackedRuns,
    WandbWriter,
    missing_package,
    mlflow_experiment_id,
    mlflow_tracking_uri,
    probe,
    server_url,
    wandb_unconfigured,
)

logger = logging.getLogger(__name__)

# Set by the user for MLflow's own run handling; the Trainer's callback would open a second run beside textclf's.
_MLFLOW_RUN_ENV = ("MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN")


def check_trackers(trackers: Sequence[Tracker]) -> None:
    """Refuse, before any work, trackers that cannot run here.

    Raises:
        ConfigError: one line naming each tracker whose package is missing (and what to install), or W&B without
            a login that would stop the training to ask for one.
    """
    problems = [f"{tracker} is not installed: {hint}" for tracker in trackers if (hint := missing_package(tracker))]
    if "wandb" in trackers and not missing_package("wandb") and (why := wandb_unconfigured()):
        problems.append(f"wandb: {why}")
    if problems:
        raise ConfigError(f"train.report_to={list(trackers)}: {'; '.join(problems)}")


class TrainTracking:
    """The trackers of one `textclf train`, from the checks before training to the run ids in the manifest.

    Only the main process (rank 0) starts runs and probes servers; the other torchrun ranks pass the same
    `report_to` to their Trainer, whose callbacks log on rank 0 only.
    """

    def __init__(self, cfg: Config, run_dir: Path, trackers: list[Tracker], *, is_main: bool) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.trackers = trackers
        self.is_main = is_main
        uri_and_store: tuple[str, bool] = mlflow_tracking_uri(run_dir) if "mlflow" in trackers else ("", False)
        self.mlflow_uri, self._is_run_store = uri_and_store
        # A new folder per training: TensorBoard shows each one as its own run, and its name is the run id.
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.tensorboard_id = f"{stamp}-{secrets.token_hex(2)}"
        self.runs: dict[Tracker, TrackedRun] = {}
        # The environment as it was before MLflow's run, restored when the run ends (None: the variable was unset).
        self._mlflow_env: dict[str, str | None] = {}
        self._mlflow_uri_before: str | None = None
        self._open = False

    @classmethod
    def prepare(cls, cfg: Config, run_dir: Path, *, is_main: bool) -> TrainTracking:
        """Check packages (an error, before any work), then probe each tracker's server once: one that does not
        answer within the probe's timeout is turned off for this training, with one warning."""
        wanted = list(cfg.train.report_to)
        check_trackers(wanted)
        tracking = cls(cfg, run_dir, list(wanted), is_main=is_main)
        for tracker in wanted:
            url = server_url(tracker, tracking.mlflow_uri if tracker == "mlflow" else None)
            reason = probe(url) if url and is_main else None
            if reason is not None:
                logger.warning(
                    "%s: tracking is off for this training, its server does not answer (%s)", tracker, reason
                )
                tracking.trackers.remove(tracker)
        return tracking

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / TRACKING_DIR / TENSORBOARD_DIR / self.tensorboard_id

    def trainer_arguments(self) -> dict[str, Any]:
        """`TrainingArguments` keywords: the trackers still on, textclf's run name, TensorBoard's event folder."""
        arguments: dict[str, Any] = {"report_to": list(self.trackers) or "none", "run_name": self.cfg.run}
        if "tensorboard" in self.trackers:
            arguments["logging_dir"] = str(self.tensorboard_dir)
        return arguments

    def start(self) -> None:
        """Open one new run per tracker, before the Trainer exists, so its callbacks log into them. A tracker
        whose run cannot be started is turned off for this training with one warning: training goes on."""
        if not self.is_main:
            return
        self._open = True
        for tracker in list(self.trackers):
            try:
                self.runs[tracker] = self._start(tracker)
            except Exception as exc:  # a locked store, a server that answered the probe but refuses the run
                logger.warning("%s: tracking is off for this training, its run did not start (%s)", tracker, exc)
                self.trackers.remove(tracker)
        for tracker, run in self.runs.items():
            logger.info("%s: tracking run %s (%s)", tracker, run.run_id, run.location or self.mlflow_uri)

    def _start(self, tracker: Tracker) -> TrackedRun:
        if tracker == "tensorboard":
            self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            return TrackedRun(
                run_id=self.tensorboard_id, location=self.tensorboard_dir.relative_to(self.run_dir).as_posix()
            )
        if tracker == "wandb":
            import wandb

            run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or DEFAULT_EXPERIMENT,
                name=self.cfg.run,
                dir=str(self.run_dir / TRACKING_DIR),
                config=self.cfg.to_dict(),
            )
            return TrackedRun(run_id=run.id, location=f"{run.entity or ''}/{run.project}")
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow_env = {name: os.environ.get(name) for name in (*_MLFLOW_RUN_ENV, "MLFLOW_TRACKING_URI")}
        for name in _MLFLOW_RUN_ENV:
            if os.environ.pop(name, None) is not None:
                logger.warning("%s is set: textclf train starts a run of its own and leaves it aside", name)
        self._mlflow_uri_before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        # The fluent API (which the Trainer's callback uses) reads the global URI; setting it also sets
        # MLFLOW_TRACKING_URI in this process's environment, which `_end` undoes.
        mlflow.set_tracking_uri(self.mlflow_uri)
        experiment_id = mlflow_experiment_id(MlflowClient(self.mlflow_uri), self.run_dir, self._is_run_store)
        active = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=self.cfg.run,
            nested=mlflow.active_run() is not None,  # called from inside the user's own run: a child of it
            tags={"textclf.run": self.cfg.run},
        )
        return TrackedRun(run_id=active.info.run_id, location=None if self._is_run_store else self.mlflow_uri)

    def finish(
        self, *, data: DataRecord, metrics: TrainMetrics, step: int, files: Sequence[Path]
    ) -> TrackingSection | None:
        """Log the data's split sizes and sha256, the final validation and test metrics and `files`, end the runs,
        and return their ids for the manifest (None when no run was started)."""
        if not self.runs:
            self._end("FINISHED")
            return None
        self._flush_mlflow()
        runs = TrackedRuns(self._writers())
        runs.log_metrics({f"data/{name}_rows": split.rows for name, split in data.splits.items()}, step)
        runs.set_tags({f"data.{name}.sha256": split.sha256 for name, split in data.splits.items()})
        runs.set_tags({"data.source": json.dumps(data.source, sort_keys=True)})
        for split, values in (("validation", metrics.validation), ("test", metrics.test)):
            runs.log_metrics(
                {
                    f"{split}/accuracy": values.accuracy,
                    f"{split}/macro_f1": values.macro_f1,
                    f"{split}/micro_f1": values.micro_f1,
                },
                step,
            )
        runs.log_files(list(files), "train")
        runs.close()
        self._end("FINISHED")
        return TrackingSection(**self.runs)

    def _writers(self) -> list[RunWriter]:
        writers: list[RunWriter] = []
        for tracker, run in self.runs.items():
            try:
                if tracker == "mlflow":
                    writers.append(MlflowWriter(self.mlflow_uri, run.run_id))
                elif tracker == "tensorboard":
                    writers.append(TensorBoardWriter(self.tensorboard_dir))
                else:
                    import wandb

                    writers.append(WandbWriter(wandb.run, owns_run=False))
            except Exception as exc:  # the store went away during training
                logger.warning("%s: the training's results are not recorded in run %s: %s", tracker, run.run_id, exc)
        return writers

    def _flush_mlflow(self) -> None:
        if "mlflow" in self.runs:
            import mlflow

            # The Trainer's callback logs asynchronously; its last steps must land before the run ends.
            mlflow.flush_async_logging()

    def _end(self, status: str) -> None:
        if not self._open:
            return
        self._open = False
        for tracker in self.runs:
            try:
                if tracker == "mlflow":
                    import mlflow

                    self._flush_mlflow()
                    mlflow.end_run(status=status)
                elif tracker == "wandb":
                    import wandb

                    wandb.finish(exit_code=0 if status == "FINISHED" else 1)
            except Exception as exc:  # ending a run must not hide how the training ended
                logger.warning("%s: ending run %s failed: %s", tracker, self.runs[tracker].run_id, exc)
        self._restore_mlflow_settings()

    def _restore_mlflow_settings(self) -> None:
        if not self._mlflow_env:
            return  # MLflow's run was never started
        import mlflow

        mlflow.set_tracking_uri(self._mlflow_uri_before)  # type: ignore[arg-type]  # None unsets it
        for name, value in self._mlflow_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._mlflow_env = {}

    @contextmanager
    def closing(self) -> Iterator[TrainTracking]:
        """Around the training: runs still open when it raises are ended as failed."""
        try:
            yield self
        except BaseException:
            self._end("FAILED")
            raise
        finally:
            self._end("FINISHED")  # a run that `finish` did not reach (a non-main rank returns early)
