"""The textclf BentoML service: POST /predict classifies texts with the exported model (ONNX Runtime or OpenVINO).

Torch-free: it imports only `textclf` (config, runtime, serving) and the runtime packages. The model comes from
the BentoML model store (`make bento`), or from `TEXTCLF_ARTIFACTS=artifacts/<run>` for local runs.

Every wire shape (native `/predict`, Hugging Face / TEI, Open Inference Protocol v2) is answered by the request
guard in front of this service (`textclf.serving.guard`, added below with `add_asgi_middleware`) through one
route table and one pipeline on this worker's batcher; `predict` below declares the native route's typed contract
for BentoML's OpenAPI document and clients, and runs the same pipeline (see the guard's docstring for why the
guard, not BentoML's handler, reads the body).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import bentoml
from pydantic import Field, StringConstraints
from starlette.responses import Response

from textclf.config import load_config
from textclf.errors import RequestError
from textclf.inference.explain import DEFAULT_TOP_K_WORDS
from textclf.inference.runtime import Classifier, default_intra_op_threads
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions
from textclf.inference.windows import Windows
from textclf.serving.auth import Access, parse_api_keys
from textclf.serving.batcher import BatchStats, Engine, GreedyBatcher
from textclf.serving.bentoml_patch import check_request_timer_replaced, replace_bentoml_request_timer
from textclf.serving.explaining import Explaining
from textclf.serving.guard import RequestGuard
from textclf.serving.limits import NON_BLANK_PATTERN, Limits
from textclf.serving.monitoring import Monitoring
from textclf.serving.protocols.native import NativeAdapter
from textclf.serving.signature import (
    Direction,
    Explain,
    MinConfidence,
    OnOverlength,
    Prediction,
    RawScores,
    TopK,
    TopKWords,
)
from textclf.serving.state import ModelState

logger = logging.getLogger(__name__)

CONFIG = load_config(os.environ.get("TEXTCLF_CONFIG"))  # configs/default.yaml + TEXTCLF_* environment
SERVE = CONFIG.serve
ARTIFACTS_OVERRIDE = os.environ.get("TEXTCLF_ARTIFACTS")
LIMITS = Limits.from_config(SERVE)  # read once: the signature below, the guard and every adapter use these
MODEL_STATE = ModelState()  # this worker's loaded model and pipeline, shared with the guard middleware
NATIVE = NativeAdapter(LIMITS)
# The container's base: python:3.11-slim on a normal machine, or a local image where no registry is reachable
# (deploy/base-image.sh). The distro name is deliberately not one BentoML knows, so its Dockerfile does not
# install build-essential and git: every runtime package here ships as a wheel and nothing is compiled.
BASE_IMAGE = os.environ.get("TEXTCLF_BASE_IMAGE", "python:3.11-slim")
IMAGE = bentoml.images.Image(base_image=BASE_IMAGE, distro="prebuilt-wheels-only", lock_python_packages=False)
# BentoML's own per-request timer leaked every request's context for its whole timeout and is replaced by a
# pass-through (textclf.serving.bentoml_patch, with the measurements); the guard enforces serve.timeout_s.
replace_bentoml_request_timer()
# After its engine thread dies a worker answers 503 at once, fails /livez for this long (probes and logs see it),
# then exits through uvicorn's graceful shutdown: BentoML's arbiter (circus) starts a fresh one. Nothing else would:
# BentoML reports `__is_alive__` on /livez but never acts on it. (Inside a BentoML container the arbiter does not
# respawn workers, BENTOML_CONTAINERIZED; the server exits with its last worker and the orchestrator restarts it.)
ENGINE_DEATH_EXIT_DELAY_S = 2.0
# Test-only hooks, off unless set (tests/integration/test_serving_load.py): an engine call sleeps this long first,
# and a text equal to the marker kills the engine thread in a real `bentoml serve`.
DEBUG_ENGINE_DELAY_S = float(os.environ.get("TEXTCLF_DEBUG_ENGINE_DELAY_S") or 0)
DEBUG_KILL_ENGINE_TEXT = os.environ.get("TEXTCLF_DEBUG_KILL_ENGINE_TEXT") or None

# The request and response as typed, constrained values: BentoML writes them into /docs.json. The native adapter
# checks the same `LIMITS` (and what a schema cannot say) and answers in the project's error shape.
Text = Annotated[str, StringConstraints(min_length=1, max_length=LIMITS.max_chars_per_text, pattern=NON_BLANK_PATTERN)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=LIMITS.max_texts_per_request)]


TOKENIZE_SECONDS = bentoml.metrics.Histogram(
    name="textclf_tokenize_seconds",
    documentation="Tokenization time per request, on arrival (overlaps the engine's running batch)",
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
INFER_SECONDS = bentoml.metrics.Histogram(
    name="textclf_infer_seconds",
    documentation="Engine time per batch, ONNX Runtime or OpenVINO (its sum over wall time is the engine's busy "
    "fraction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
QUEUE_SECONDS = bentoml.metrics.Histogram(
    name="textclf_queue_wait_seconds",
    documentation="Wait of a batch's oldest request between arrival and the engine taking it",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="textclf_batch_size",
    documentation="Texts per engine batch (what the greedy batcher merged)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

GC_PAUSE_SECONDS = bentoml.metrics.Histogram(
    name="textclf_gc_pause_seconds",
    documentation="Python garbage-collector pauses in the worker, by generation (they stop the event loop)",
    labelnames=["generation"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
_gc_started = [0.0]
# Pauses are measured in the collector's callback but observed after each engine call (`_observe`). A collection can
# start inside any allocation, also while this thread holds prometheus_client's multiprocess lock (not reentrant) in
# the middle of a metric update; observing from the callback then waited on that lock for ever (a worker hung before
# its first answer: tests/integration/test_monitor.py, 2026-12-07, the main thread in BentoML's request metrics and the
# drift gauges' thread both waiting in prometheus_client/values.py). Appending to a deque takes no lock.
_gc_pauses: deque[tuple[int, float]] = deque(maxlen=1024)


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _gc_pauses.append((info["generation"], time.perf_counter() - _gc_started[0]))


def _observe(stats: BatchStats) -> None:
    while _gc_pauses:
        generation, pause_s = _gc_pauses.popleft()
        GC_PAUSE_SECONDS.labels(generation=str(generation)).observe(pause_s)
    for seconds in stats.tokenize_s:
        TOKENIZE_SECONDS.observe(seconds)
    INFER_SECONDS.observe(stats.infer_s)
    QUEUE_SECONDS.observe(stats.queue_wait_s)
    BATCH_SIZE.observe(stats.texts)


class EngineKilled(BaseException):
    """Raised by the test-only kill marker: a BaseException, so no `except Exception` in the engine thread stops it."""


class _DebugEngine:
    """The classifier behind the test-only hooks: a slow engine, and a text that kills the engine thread."""

    _KILL = object()  # stands for the marker text's encoding

    def __init__(self, classifier: Classifier, delay_s: float, kill_text: str | None) -> None:
        self.classifier = classifier
        self.delay_s = delay_s
        self.kill_text = kill_text

    def encode(self, texts: list[str], options: TextOptions = DEFAULT_OPTIONS) -> list[Any]:
        encodings = self.classifier.encode(texts, options)
        return [self._KILL if text == self.kill_text else e for text, e in zip(texts, encodings, strict=True)]

    def windows(self, encodings: list[Any], options: TextOptions = DEFAULT_OPTIONS) -> Windows[Any] | None:
        if any(e is self._KILL for e in encodings):  # the marker runs as the one text it is
            return None
        return self.classifier.windows(encodings, options)

    def token_count(self, encoding: Any) -> int:
        return 1 if encoding is self._KILL else self.classifier.token_count(encoding)

    def infer_encoded(self, encodings: list[Any]) -> Any:
        time.sleep(self.delay_s)
        if any(e is self._KILL for e in encodings):
            raise EngineKilled("TEXTCLF_DEBUG_KILL_ENGINE_TEXT reached the engine")
        return self.classifier.infer_encoded(encodings)


def _exit_after_engine_death(_error: BaseException | None) -> None:
    """The engine thread is gone and this worker cannot serve again: leave, and let the arbiter replace us."""
    logger.critical("this worker exits in %g s; BentoML's arbiter starts a fresh one", ENGINE_DEATH_EXIT_DELAY_S)
    # SIGTERM, not os._exit: uvicorn's graceful shutdown still sends every answer already written (all 503s now).
    timer = threading.Timer(ENGINE_DEATH_EXIT_DELAY_S, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()


def _platform(classifier: Classifier) -> str:
    """The v2 protocol's `platform` of what serves: Triton's names for the engines, both where long texts run on a
    second variant."""
    names = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}
    return "+".join(dict.fromkeys(names[part.name] for part in classifier.engine.parts()))


def _model_info(classifier: Classifier, run_dir: Path) -> dict[str, Any]:
    """`GET /model`: the served model, and the engine that runs it (ONNX Runtime or OpenVINO) with its threads."""
    sha256 = classifier.model_sha256 or ""
    return {
        "name": SERVE.model_name,
        "variant": classifier.variant,
        "sha256": sha256,
        "labels": classifier.labels,
        "multi_label": classifier.multi_label,
        "threshold": classifier.threshold,
        "max_seq_len": classifier.max_seq_len,
        # The confidence the answers are scored with: export's fitted temperature, and the threshold in force.
        "temperature": classifier.temperature,
        "label_thresholds": classifier.label_thresholds,
        "selective_threshold": selective.describe() if (selective := classifier.selective_threshold) else None,
        "engine": classifier.engine.name,
        "engine_threads": classifier.engine.threads,
        "engine_detail": classifier.engine.describe(),
        "providers": classifier.providers,
        "intra_op_threads": classifier.intra_op_threads,
        "source": str(run_dir),
    }


def _route_logs_to_bentoml() -> None:
    """BentoML configures handlers for its own logger tree only; the guard's request log (sizes and latency,
    never texts) and the runtime's load message go to the same place."""
    ours = logging.getLogger("textclf")
    if not ours.handlers:
        for handler in logging.getLogger("bentoml").handlers:
            ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


@bentoml.service(
    name="textclf",
    workers=SERVE.workers,
    # No traffic.max_concurrency here: the guard enforces it and answers 503 + Retry-After in our error shape.
    # BentoML's timeout middleware is a pass-through (textclf.serving.bentoml_patch): the guard enforces this timeout.
    traffic={"timeout": SERVE.timeout_s},
    image=IMAGE,
    metrics={"enabled": True},
    # BentoML's access line per request, next to the guard's own (status, texts, bytes, latency; never texts).
    logging={"access": {"enabled": SERVE.access_log}},
)
class TextClassifier:
    """Classifies texts; concurrent requests are merged by the project's greedy batcher (textclf.serving.batcher)."""

    if not ARTIFACTS_OVERRIDE:
        model_ref = bentoml.models.BentoModel(f"{SERVE.model_name}:latest")

    def __init__(self) -> None:
        _route_logs_to_bentoml()
        run_dir = Path(ARTIFACTS_OVERRIDE) if ARTIFACTS_OVERRIDE else Path(self.model_ref.path)
        self.classifier = Classifier.from_run(
            run_dir,
            SERVE.variant,  # a deploy's pick among the shipped variants; one not shipped is refused here, at start
            intra_op_threads=SERVE.intra_op_threads or default_intra_op_threads(SERVE.workers),
            inter_op_threads=SERVE.inter_op_threads,
            use_cuda=SERVE.use_cuda,
            on_overlength=SERVE.on_overlength,
            allow_spinning=SERVE.ort_spinning,
            chunk_overlap_tokens=SERVE.chunk_overlap_tokens,
            chunk_aggregation=SERVE.chunk_aggregation,
            # Refused here, at start, with the reason: a target no threshold reaches (the best one named), or either
            # setting on a multi-label model (textclf.inference.confidence.resolve_threshold).
            min_confidence=SERVE.min_confidence,
            target_accuracy=SERVE.target_accuracy,
        )
        engine: Engine[Any] = self.classifier
        if DEBUG_ENGINE_DELAY_S or DEBUG_KILL_ENGINE_TEXT:
            logger.warning("test-only engine hooks are on (TEXTCLF_DEBUG_*): never in production")
            engine = _DebugEngine(self.classifier, DEBUG_ENGINE_DELAY_S, DEBUG_KILL_ENGINE_TEXT)
        self.batcher = GreedyBatcher.from_config(engine, SERVE, on_batch=_observe, on_death=_exit_after_engine_death)
        self.batcher.start()
        # Every protocol's route (textclf.serving.routes) runs its calls on this pipeline: this batcher, then the
        # classifier's own scoring of the logits.
        self.pipeline = MODEL_STATE.set_model(
            _model_info(self.classifier, run_dir), self.batcher, self.classifier.predictions, _platform(self.classifier)
        )
        # Classifier metrics, the drift window (GET /monitor and its gauges) and BentoML's data collection, fed by
        # every answered text of every route (textclf.serving.monitoring).
        self.monitoring = Monitoring.for_worker(self.classifier, run_dir, SERVE)
        self.monitoring.attach(self.pipeline)
        # `explain`: each word deleted in turn, through this batcher (never into the monitoring above).
        self.pipeline.explaining = Explaining(self.classifier, LIMITS)
        check_request_timer_replaced()  # the app's middleware stack is built before its startup runs this
        # Everything loaded so far lives as long as the worker: freezing it keeps the collector from walking
        # those objects again in every full collection (each one a pause of the event loop and the engine).
        gc.collect()
        gc.freeze()
        gc.callbacks.append(_time_gc)

    async def __is_alive__(self) -> bool:
        """BentoML's /livez: false once the engine thread has ended (the worker then exits and is restarted)."""
        return self.batcher.alive

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: a worker whose engine has ended takes no traffic."""
        return self.batcher.alive

    @bentoml.on_shutdown
    async def _drain(self) -> None:
        """Stop the engine thread, answering anything still queued; joined in a thread, off the event loop.

        By the time BentoML runs this hook, uvicorn's graceful shutdown has already waited for every request in
        flight (the engine thread serves them until then; tests/integration/test_serving_load.py): the drain is
        the engine thread's orderly end, and a backstop for anything left."""
        await asyncio.to_thread(self.batcher.close)
        await asyncio.to_thread(self.monitoring.close)

    @bentoml.api
    async def predict(
        self,
        texts: Texts,
        top_k: TopK = None,
        raw_scores: RawScores = False,
        on_overlength: OnOverlength = None,  # type: ignore[assignment]
        truncation_direction: Direction = "right",
        min_confidence: MinConfidence = None,  # type: ignore[assignment]
        explain: Explain = False,
        top_k_words: TopKWords = DEFAULT_TOP_K_WORDS,
    ) -> list[Prediction]:
        """One prediction per text, in order: label, score, every class's probability (+ the label set of a
        multi-label model, + truncated, + chunks for a text read in windows, + abstained where a threshold is in
        force).

        Over HTTP the guard answers `POST /predict` (through the same native adapter and pipeline); this body
        serves callers that reach the method itself, BentoML's in-process ones."""
        call = NATIVE.call(
            texts,
            top_k=top_k,
            raw_scores=raw_scores,
            on_overlength=on_overlength,
            truncation_direction=truncation_direction,
            min_confidence=min_confidence,
        )
        try:
            call = replace(call, explain_words=NATIVE.explain_words(explain, top_k_words, len(texts)))
            reply = await self.pipeline.reply(NATIVE, NATIVE.for_model(call, self.pipeline.model))
        except RequestError as exc:  # a full queue or a dead engine (503), a text too long (422), too many windows
            reply = NATIVE.error(exc)
        # A ready Response skips BentoML's output serializer, which rebuilds the output type's JSON schema for
        # every response: 15 % of the event loop's time at 32 users (py-spy, issue 10). The annotation above
        # still documents the body in the OpenAPI spec.
        return Response(  # type: ignore[return-value]
            reply.body,
            status_code=reply.status,
            headers={k.decode(): v.decode() for k, v in [*MODEL_STATE.headers, *reply.headers]},
            media_type=reply.content_type,
        )


# @bentoml.service returns a Service object, which mypy cannot see through the decorator.
TextClassifier.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    limits=LIMITS,
    state=MODEL_STATE,
    access=Access(parse_api_keys(SERVE.api_keys.get_secret_value() if SERVE.api_keys else None), SERVE.metrics_public),
)
