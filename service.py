"""The textclf BentoML service: POST /predict classifies texts with the exported ONNX model.

Torch-free: it imports only `textclf` (config, runtime, guard) and the runtime packages. The model comes from
the BentoML model store (`make bento`), or from `TEXTCLF_ARTIFACTS=artifacts/<run>` for local runs.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import bentoml
from pydantic import BaseModel, Field, StringConstraints
from starlette.responses import Response

from textclf.auth import parse_api_keys
from textclf.batcher import BatchStats, GreedyBatcher
from textclf.bentoml_patch import replace_bentoml_request_timer
from textclf.config import load_config
from textclf.errors import RequestError
from textclf.guard import Access, ModelState, RequestGuard, error_body
from textclf.runtime import Classifier, default_intra_op_threads
from textclf.validation import NON_BLANK_PATTERN, Limits

logger = logging.getLogger(__name__)

CONFIG = load_config(os.environ.get("TEXTCLF_CONFIG"))  # configs/default.yaml + TEXTCLF_* environment
SERVE = CONFIG.serve
ARTIFACTS_OVERRIDE = os.environ.get("TEXTCLF_ARTIFACTS")
MODEL_STATE = ModelState()  # this worker's loaded model, shared with the guard middleware
# The container's base: python:3.11-slim on a normal machine, or a local image where no registry is reachable
# (deploy/base-image.sh). The distro name is deliberately not one BentoML knows, so its Dockerfile does not
# install build-essential and git: every runtime package here ships as a wheel and nothing is compiled.
BASE_IMAGE = os.environ.get("TEXTCLF_BASE_IMAGE", "python:3.11-slim")
IMAGE = bentoml.images.Image(base_image=BASE_IMAGE, distro="prebuilt-wheels-only", lock_python_packages=False)
# The guard answers past serve.timeout_s in our error shape; BentoML's own per-request timer leaked every request's
# context for its whole timeout and is replaced by a pass-through (textclf.bentoml_patch, with the measurements).
BENTOML_TIMEOUT_MARGIN_S = 30
replace_bentoml_request_timer()

# The request and response as typed, constrained values: BentoML writes them into /docs.json. The guard checks the
# same limits first (and what a schema cannot say) and answers in the project's error shape.
Text = Annotated[str, StringConstraints(min_length=1, max_length=SERVE.max_chars_per_text, pattern=NON_BLANK_PATTERN)]
Texts = Annotated[list[Text], Field(min_length=1, max_length=SERVE.max_texts_per_request)]
TopK = Annotated[int | None, Field(ge=1, description="only the k best classes in `scores`, best first")]
RawScores = Annotated[bool, Field(description="logits instead of probabilities in `score` and `scores`")]


class Prediction(BaseModel):
    label: str = Field(description="the most probable class")
    score: float = Field(description="its probability (its logit with raw_scores)")
    scores: dict[str, float] = Field(
        description="every class's probability (logit), or the top_k best, best first; multi-label: each label's "
        "own sigmoid, so they need not sum to 1"
    )
    labels: list[str] | None = Field(
        None,
        description="multi-label models only: every label whose probability is at or over the model's threshold, "
        "best first (possibly empty); top_k and raw_scores do not change it",
    )
    truncated: bool | None = Field(None, description="present (true) when the text was cut at max_seq_len tokens")


TOKENIZE_SECONDS = bentoml.metrics.Histogram(
    name="textclf_tokenize_seconds",
    documentation="Tokenization time per request, on arrival (overlaps the engine's running batch)",
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
)
INFER_SECONDS = bentoml.metrics.Histogram(
    name="textclf_infer_seconds",
    documentation="ONNX Runtime time per engine batch (its sum over wall time is the engine's busy fraction)",
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


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        GC_PAUSE_SECONDS.labels(generation=str(info["generation"])).observe(time.perf_counter() - _gc_started[0])


def _observe(stats: BatchStats) -> None:
    for seconds in stats.tokenize_s:
        TOKENIZE_SECONDS.observe(seconds)
    INFER_SECONDS.observe(stats.infer_s)
    QUEUE_SECONDS.observe(stats.queue_wait_s)
    BATCH_SIZE.observe(stats.texts)


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
    traffic={"timeout": SERVE.timeout_s + BENTOML_TIMEOUT_MARGIN_S},
    image=IMAGE,
    metrics={"enabled": True},
    # BentoML's access line per request, next to the guard's own (status, texts, bytes, latency; never texts).
    logging={"access": {"enabled": SERVE.access_log}},
)
class TextClassifier:
    """Classifies texts; concurrent requests are merged by the project's greedy batcher (textclf.batcher)."""

    if not ARTIFACTS_OVERRIDE:
        model_ref = bentoml.models.BentoModel(f"{SERVE.model_name}:latest")

    def __init__(self) -> None:
        _route_logs_to_bentoml()
        run_dir = Path(ARTIFACTS_OVERRIDE) if ARTIFACTS_OVERRIDE else Path(self.model_ref.path)
        self.classifier = Classifier.from_run(
            run_dir,
            intra_op_threads=SERVE.intra_op_threads or default_intra_op_threads(SERVE.workers),
            inter_op_threads=SERVE.inter_op_threads,
            use_cuda=SERVE.use_cuda,
            on_overlength=SERVE.on_overlength,
            allow_spinning=SERVE.ort_spinning,
        )
        sha256 = self.classifier.model_sha256 or ""
        MODEL_STATE.set_model(
            SERVE.model_name,
            self.classifier.variant,
            sha256,
            {
                "name": SERVE.model_name,
                "variant": self.classifier.variant,
                "sha256": sha256,
                "labels": self.classifier.labels,
                "multi_label": self.classifier.multi_label,
                "threshold": self.classifier.threshold,
                "max_seq_len": self.classifier.max_seq_len,
                "providers": self.classifier.providers,
                "intra_op_threads": self.classifier.intra_op_threads,
                "source": str(run_dir),
            },
        )
        if SERVE.on_overlength == "error":
            MODEL_STATE.count_overlength = self.classifier.first_overlength
        self.batcher = GreedyBatcher(
            self.classifier,
            max_batch_texts=SERVE.max_batch_texts,
            max_batch_tokens=SERVE.max_batch_tokens,
            max_queued_texts=SERVE.max_queued_texts,
            lookahead_texts=SERVE.lookahead_texts,
            on_batch=_observe,
        )
        self.batcher.start()
        # Everything loaded so far lives as long as the worker: freezing it keeps the collector from walking
        # those objects again in every full collection (each one a pause of the event loop and the engine).
        gc.collect()
        gc.freeze()
        gc.callbacks.append(_time_gc)

    @bentoml.on_shutdown
    def _drain(self) -> None:
        """Answer whatever is still queued before the worker exits (SIGTERM with requests in flight)."""
        self.batcher.close()

    @bentoml.api
    async def predict(self, texts: Texts, top_k: TopK = None, raw_scores: RawScores = False) -> list[Prediction]:
        """One prediction per text, in order: label, score, every class's probability (+ the label set of a
        multi-label model, + truncated)."""
        try:
            logits, truncated = await self.batcher.submit(texts)
        except RequestError as exc:  # a full queue (503) or, in error mode, a text over max_seq_len tokens (422)
            # Our own error body: the guard passes it on as it is (with Retry-After on a 503).
            return Response(json.dumps(error_body(exc)), status_code=exc.status)  # type: ignore[return-value]
        out = []
        for prediction in self.classifier.predictions(logits, truncated, top_k=top_k, raw_scores=raw_scores):
            item: dict[str, object] = {
                "label": prediction.label,
                "score": prediction.score,
                "scores": prediction.scores,
            }
            if prediction.labels is not None:
                item["labels"] = prediction.labels
            if prediction.truncated:
                item["truncated"] = True
            out.append(item)
        # A ready Response skips BentoML's output serializer, which rebuilds the output type's JSON schema for
        # every response: 15 % of the event loop's time at 32 users (py-spy, issue 10). The annotation above
        # still documents the body in the OpenAPI spec.
        return Response(json.dumps(out).encode(), media_type="application/json")  # type: ignore[return-value]


# @bentoml.service returns a Service object, which mypy cannot see through the decorator.
TextClassifier.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    limits=Limits(SERVE.max_texts_per_request, SERVE.max_chars_per_text, SERVE.max_body_bytes, SERVE.max_concurrency),
    state=MODEL_STATE,
    access=Access(parse_api_keys(SERVE.api_keys.get_secret_value() if SERVE.api_keys else None), SERVE.metrics_public),
    timeout_s=SERVE.timeout_s,
)
