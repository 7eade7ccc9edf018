"""What a worker measures of its answers: classifier metrics on /metrics, a drift window against export's reference
(gauges and `GET /monitor`), and each answered text's features and prediction through BentoML's data collection.

One `Monitoring` per worker observes the pipeline (`Pipeline.on_answer`): once per answered request, on every route,
for each text the client sent (never a chunk window or a perturbed copy). Per text the request path does O(1) work:
a counter, two histogram observations, a row into the drift window's ring buffers and a row queued for collection.
A daemon thread of the worker does the rest once a second: it writes the queued rows through `bentoml.monitor` and,
while texts arrive, refreshes the drift gauges from a report (the tests run when read, at most once a second:
`DriftMonitor.report`), so every worker's gauges stay live whichever worker a scrape reaches.

Why the rows are queued: one `bentoml.monitor` record per text cost 196 µs of CPU a text at one text a request, ten
times the rest of the path (metrics and drift window: 18-21 µs a text); queued and written as one record a second,
each column a list of that second's texts, the write costs 3-5 µs a text (100 to 1,000 texts a record). Measured on
the 2-core AMD EPYC, 2026-12-07: `Monitoring.observe` on one text 5,000 times, process time, prometheus_client in
multiprocess mode. The engine's median per real text at b1 is 3.3-5.5 ms there (reports/zen4/default, real-b1).

Prometheus across workers: BentoML runs each worker as a process and points prometheus_client's multiprocess mode at
one folder (PROMETHEUS_MULTIPROC_DIR). Counters and histograms are summed over the workers; each drift gauge keeps one
series per live worker (`multiprocess_mode="liveall"`, a `pid` label), since each worker has its own window: alert
rules aggregate them (`max(textclf_drift_alarm)`). A worker that exits cleanly takes its gauges away (`close`); one
killed outright leaves its last values until the server restarts and BentoML empties the folder.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from textclf.artifacts.drift_reference import SIGNALS
from textclf.artifacts.manifest import require_export
from textclf.inference.predictions import Prediction
from textclf.serving.batcher import Answer
from textclf.serving.collect import DataCollector
from textclf.serving.drift import REPORT_MAX_AGE_S, DriftMonitor, DriftReport, count_words, load_reference
from textclf.serving.protocols.common import Call

if TYPE_CHECKING:
    from textclf.config import ServeConfig
    from textclf.inference.runtime import Classifier
    from textclf.serving.pipeline import Pipeline

logger = logging.getLogger(__name__)

CONFIDENCE_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
INPUT_TOKEN_BUCKETS: Final = (4, 8, 16, 32, 64, 128, 256, 512)
DRIFT_OFF: Final = (
    "drift monitoring is off on this server: its model was exported without a drift reference (reference.npz); "
    "export the run again to turn it on (the classifier metrics are on)"
)

_SIGNAL_RESULT = {
    "type": "object",
    "properties": {
        "statistic": {"type": "number", "nullable": True, "description": "χ² or KS D; null for an empty window"},
        "critical_value": {"type": "number", "description": "the statistic above which it is drift (from export)"},
        "score": {"type": "number", "nullable": True, "description": "statistic / critical value; null until full"},
    },
    "required": ["statistic", "critical_value", "score"],
}
_REPORT = {
    "worker_pid": {"type": "integer", "description": "the worker that answered: each has its own window"},
    "window_size": {"type": "integer", "description": "serve.monitor_window"},
    "texts": {"type": "integer", "description": "answered texts in the window now"},
    "seen": {"type": "integer", "description": "answered texts this worker has observed"},
    "signals": {"type": "object", "properties": dict.fromkeys(SIGNALS, _SIGNAL_RESULT), "required": list(SIGNALS)},
    "alarm": {"type": "boolean", "description": "a full window passes any signal's critical value"},
    "estimated_accuracy": {"type": "number", "nullable": True, "description": "mean confidence over the window"},
    "reference_estimated_accuracy": {"type": "number", "description": "mean confidence on the reference"},
}
# `GET /monitor`'s body (`Monitoring.report`), for the OpenAPI document (`textclf.serving.openapi`).
MONITOR_SCHEMA: Final = {"type": "object", "properties": _REPORT, "required": list(_REPORT)}


def _metrics_api(registry: Any) -> tuple[Any, dict[str, Any]]:
    """BentoML's metrics API (prometheus_client's classes, set up for BentoML's multiprocess mode) and the keywords
    that put a metric in `registry` (tests give their own; the service the default one)."""
    import bentoml

    return bentoml.metrics, ({} if registry is None else {"registry": registry})


class ClassifierMetrics:
    """Counters and histograms of answered texts, summed over the workers."""

    def __init__(self, labels: Sequence[str], registry: Any = None) -> None:
        api, where = _metrics_api(registry)
        predictions = api.Counter(
            name="textclf_predictions",
            documentation="Answered texts by predicted label (a multi-label model: its top label)",
            labelnames=["label"],
            **where,
        )
        # One child per label, bound now: no label lookup per text, and every label shows 0 before its first answer.
        self.by_label = [predictions.labels(label=label) for label in labels]
        self.confidence = api.Histogram(
            name="textclf_confidence",
            documentation="Top label's calibrated probability per answered text (whatever raw_scores asked)",
            buckets=CONFIDENCE_BUCKETS,
            **where,
        )
        self.input_tokens = api.Histogram(
            name="textclf_input_tokens",
            documentation="Tokens the model read per answered text, after truncation (read in windows: the first)",
            buckets=INPUT_TOKEN_BUCKETS,
            **where,
        )
        self.truncated = api.Counter(
            name="textclf_truncated", documentation="Answered texts cut at max_seq_len tokens", **where
        )
        self.abstained = api.Counter(
            name="textclf_abstained",
            documentation="Answered texts whose top probability fell under the selective threshold (abstained)",
            **where,
        )

    def count(self, label: int, confidence: float, tokens: int | None, truncated: bool, abstained: bool | None) -> None:
        """One answered text."""
        self.by_label[label].inc()
        self.confidence.observe(confidence)
        if tokens is not None:
            self.input_tokens.observe(tokens)
        if truncated:
            self.truncated.inc()
        if abstained:
            self.abstained.inc()


class DriftGauges:
    """The drift report as gauges, one series per live worker (each has its own window)."""

    def __init__(self, registry: Any = None) -> None:
        api, where = _metrics_api(registry)
        live = {"multiprocess_mode": "liveall", **where}
        score = api.Gauge(
            name="textclf_drift_score",
            documentation="Drift statistic / its critical value per signal over this worker's window (> 1: drift; "
            "NaN until the window is full)",
            labelnames=["signal"],
            **live,
        )
        self.scores = {signal: score.labels(signal=signal) for signal in SIGNALS}
        self.alarm = api.Gauge(
            name="textclf_drift_alarm",
            documentation="1 when a full window passes any signal's critical value (family-wise level of export)",
            **live,
        )
        self.estimated_accuracy = api.Gauge(
            name="textclf_estimated_accuracy",
            documentation="Mean confidence over this worker's window: the accuracy expected without labels",
            **live,
        )
        self.reference_estimated_accuracy = api.Gauge(
            name="textclf_reference_estimated_accuracy",
            documentation="Mean confidence on export's reference (the test split)",
            **live,
        )

    def show(self, report: DriftReport) -> None:
        """Set every gauge from one report (NaN where a value does not exist yet)."""
        for signal, result in report.signals.items():
            self.scores[signal].set(math.nan if result.score is None else result.score)
        self.alarm.set(1 if report.alarm else 0)
        accuracy = report.estimated_accuracy
        self.estimated_accuracy.set(math.nan if accuracy is None else accuracy)
        self.reference_estimated_accuracy.set(report.reference_estimated_accuracy)


class Monitoring:
    """One worker's observer of its answers: the metrics, the drift window and gauges, the data collection.

    Args:
        labels: the model's labels, in id order.
        probabilities: the variant's served probabilities of logits: the confidence of a `raw_scores` answer.
        metrics: where each answered text is counted.
        drift: the drift window and its reference; None: drift is off (an older run without a reference).
        gauges: where the drift report is shown (with `drift`).
        collector: BentoML's data collection; None: not collected.
        refresh_s: how often the monitoring thread writes the collected texts and refreshes the gauges.
    """

    def __init__(
        self,
        labels: Sequence[str],
        probabilities: Callable[[np.ndarray], np.ndarray],
        metrics: ClassifierMetrics,
        *,
        drift: DriftMonitor | None = None,
        gauges: DriftGauges | None = None,
        collector: DataCollector | None = None,
        refresh_s: float = REPORT_MAX_AGE_S,
    ) -> None:
        self.label_ids = {label: i for i, label in enumerate(labels)}
        self.probabilities = probabilities
        self.metrics = metrics
        self.drift = drift
        self.gauges = gauges
        self.collector = collector
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_tokens = False

    @classmethod
    def for_worker(cls, classifier: Classifier, run_dir: Path, serve: ServeConfig) -> Monitoring:
        """The monitoring of the variant `classifier` serves from `run_dir` (a run, or a Bento's model folder).

        A variant exported without a drift reference is monitored without drift: said once here, at start.

        Raises:
            ArtifactError: the reference differs from its manifest sha256 or is malformed.
            ConfigError: `serve.monitor_window` is not the window export computed the critical values for.
        """
        record = require_export(run_dir).variants[classifier.variant]
        reference = load_reference(classifier.variant_dir, record.drift_reference, classifier.probabilities)
        drift = None
        if reference is None:
            logger.warning("%s: %s", classifier.variant, DRIFT_OFF)
        else:
            drift = DriftMonitor(reference, serve.monitor_window)
            logger.info(
                "%s: drift monitoring over the last %d answered texts (critical values %s)",
                classifier.variant,
                reference.window,
                {name: round(value, 4) for name, value in reference.critical_values.items()},
            )
        return cls(
            classifier.labels,
            classifier.probabilities,
            ClassifierMetrics(classifier.labels),
            drift=drift,
            gauges=DriftGauges() if drift is not None else None,
            collector=DataCollector(with_texts=serve.monitor_texts),
        )

    def attach(self, pipeline: Pipeline) -> None:
        """Observe every answer of `pipeline`, answer its `GET /monitor` (where drift is on), and start the gauges."""
        pipeline.on_answer.append(self.observe)
        pipeline.monitor = self.report if self.drift is not None else None
        self.start()

    def observe(self, call: Call[Any], predictions: list[Prediction], answer: Answer) -> None:
        """One answered request: each of its texts counted, put into the drift window and queued for collection."""
        if not predictions:
            return
        if call.answer.raw_scores:  # the scores are logits: the confidence is still the served probability
            confidences = np.asarray(self.probabilities(answer.logits)).max(axis=1).tolist()
        else:
            confidences = [prediction.score for prediction in predictions]
        tokens = answer.tokens
        if tokens is None and not self._warned_tokens:
            self._warned_tokens = True
            logger.warning("the batcher's answers carry no token counts: no input_tokens metric and no drift window")
        answered_at = time.time()
        keep_texts = self.collector is not None and self.collector.with_texts
        for i, prediction in enumerate(predictions):
            label, confidence = self.label_ids[prediction.label], confidences[i]
            count = tokens[i] if tokens is not None else None
            words = count_words(call.texts[i])
            self.metrics.count(label, confidence, count, prediction.truncated, prediction.abstained)
            if self.drift is not None and count is not None:
                self.drift.observe(label, confidence, count, words)
            if self.collector is not None:
                text = call.texts[i] if keep_texts else None
                row = (answered_at, prediction.label, confidence, prediction.abstained, count, words)
                self.collector.add((*row, prediction.truncated, text))

    def report(self) -> dict[str, Any]:
        """`GET /monitor`: this worker's drift report (recomputed at most once a second) and its pid.

        Raises:
            RuntimeError: drift is off (`attach` answers `GET /monitor` only where it is on).
        """
        if self.drift is None:
            raise RuntimeError(DRIFT_OFF)
        return {"worker_pid": os.getpid(), **self.drift.report().as_dict()}

    def start(self) -> None:
        """Show the drift gauges now (alarm 0, the reference's accuracy), then run the monitoring thread: every
        `refresh_s` it writes the queued texts and, while texts arrive, refreshes the gauges."""
        if self._thread is not None or (self.drift is None and self.collector is None):
            return
        if self.drift is not None and self.gauges is not None:
            self.gauges.show(self.drift.report())
        self._thread = threading.Thread(target=self._run, name="textclf-monitoring", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        shown = -1  # the texts seen by the report the gauges show
        while not self._stop.wait(self.refresh_s):
            try:
                self._flush()
                if self.drift is not None and self.gauges is not None and self.drift.seen != shown:
                    report = self.drift.report()  # maybe one from before the last texts: shown again next round
                    self.gauges.show(report)
                    shown = report.seen
            except Exception:  # monitoring must never end the worker; the next round tries again
                logger.exception("the monitoring thread's round failed")

    def _flush(self) -> None:
        if self.collector is None:
            return
        dropped, self.collector.dropped = self.collector.dropped, 0
        if dropped:
            logger.warning("data collection fell behind: %d answered texts were not logged", dropped)
        self.collector.flush()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the monitoring thread, write what is queued, and take this worker's drift gauges off /metrics (a
        clean exit leaves no stale series)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        try:
            self._flush()
        except Exception:
            logger.exception("writing the last collected texts failed")
        if self.gauges is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
