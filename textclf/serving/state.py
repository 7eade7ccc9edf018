"""What one worker serves: filled by the service's `__init__` once the model is loaded, read by the guard.

A typed hand-over from the BentoML service instance to the ASGI middleware in front of it (both live in the
worker process; the middleware is built before the instance exists, so it is given this holder, empty, first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textclf.errors import RequestError
from textclf.serving.pipeline import Batcher, Pipeline, Scorer
from textclf.serving.protocols.common import ModelFacts
from textclf.serving.wire import Headers

NOT_LOADED = "the model is not loaded yet; retry shortly"


@dataclass
class ModelState:
    """The loaded model of this worker: its description, its response headers and its pipeline."""

    info: dict[str, Any] = field(default_factory=dict)  # the body of `GET /model`
    headers: Headers = field(default_factory=list)  # X-Model-Name, -Variant, -Sha256 on every answer
    facts: ModelFacts | None = None  # the model as the protocols name it
    platform: str = "onnxruntime_onnx"  # v2 metadata: the engine that serves, in Triton's words
    pipeline: Pipeline | None = None

    def set_model(
        self, info: dict[str, Any], batcher: Batcher, scorer: Scorer, platform: str = "onnxruntime_onnx"
    ) -> Pipeline:
        """Serve the model `info` describes (its name, variant, sha256, labels, ...) through `batcher`.

        Returns:
            The worker's pipeline, where observers of every answer (`on_answer`) are added.
        """
        self.info = info
        self.facts = ModelFacts.from_info(info)
        self.headers = [
            (b"x-model-name", self.facts.name.encode()),
            (b"x-model-variant", self.facts.variant.encode()),
            (b"x-model-sha256", self.facts.sha256.encode()),
        ]
        self.platform = platform
        self.pipeline = Pipeline(batcher, scorer, self.facts)
        return self.pipeline

    @property
    def is_ready(self) -> bool:
        """A model is loaded and its engine takes work."""
        return self.pipeline is not None and self.pipeline.alive

    def model(self) -> ModelFacts:
        """The served model, or a 503 while the worker is still starting."""
        if self.facts is None:
            raise RequestError("engine_unavailable", NOT_LOADED)
        return self.facts

    def loaded(self) -> tuple[ModelFacts, Pipeline]:
        """The model and its pipeline, or a 503 while the worker is still starting."""
        if self.facts is None or self.pipeline is None:
            raise RequestError("engine_unavailable", NOT_LOADED)
        return self.facts, self.pipeline
