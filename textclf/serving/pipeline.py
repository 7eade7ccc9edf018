"""The one request path behind every protocol: a call's texts → the batcher → predictions → observers → render.

Every route that classifies (native `/predict`, the Hugging Face / TEI shapes, Open Inference Protocol v2) runs its
`Call` here, on this worker's one batcher, and renders the same `Prediction`s in its own shape. Observers hook in
once (`Pipeline.on_answer`): each sees every answered request's call, predictions and the batcher's answer (its
logits and tokens per text), one per text the client sent (a long document read in windows is one prediction,
aggregated by the batcher; windows and any perturbed copies of a text never reach them).

A call that asks for explanations (`Call.explain_words`) queues its texts' perturbed copies beside its texts, at
once (`textclf.serving.explaining`): one wait in the queue, and the request fails whole if either part is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from textclf.errors import RequestError
from textclf.inference.predictions import Prediction
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions
from textclf.serving.batcher import INLINE_TOKENIZE_CHARS, Answer
from textclf.serving.explaining import Explaining, ExplainWork
from textclf.serving.protocols.common import Adapter, Call, ModelFacts
from textclf.serving.wire import Reply

logger = logging.getLogger(__name__)

Observer = Callable[[Call[Any], list[Prediction], Answer], None]


class Batcher(Protocol):
    """What the pipeline needs of the worker's batcher (`textclf.serving.batcher.GreedyBatcher` is one)."""

    async def submit(self, texts: Sequence[str], options: TextOptions = DEFAULT_OPTIONS) -> Answer:
        """Queue the texts; their logits and flags, in input order (a RequestError for a refused request)."""
        ...

    @property
    def alive(self) -> bool:
        """Whether the engine thread still takes work."""
        ...


class Scorer(Protocol):
    """Logits to predictions with the call's answer options (`Classifier.predictions` is one)."""

    def __call__(
        self,
        logits: np.ndarray,
        truncated: list[bool],
        *,
        top_k: int | None = None,
        raw_scores: bool = False,
        chunks: list[int] | None = None,
        min_confidence: float | None = None,
    ) -> list[Prediction]: ...


class Pipeline:
    """This worker's batcher and scorer, and the observers of every answered call."""

    def __init__(self, batcher: Batcher, scorer: Scorer, model: ModelFacts) -> None:
        self.batcher = batcher
        self.scorer = scorer
        self.model = model
        self.on_answer: list[Observer] = []  # called with (call, predictions, answer) once per answered call
        # `GET /monitor`'s body (this worker's drift report, `textclf.serving.monitoring`); None: drift is off.
        self.monitor: Callable[[], dict[str, Any]] | None = None
        self.explaining: Explaining | None = None  # None: a call asking for explanations is refused (422)

    @property
    def alive(self) -> bool:
        """Whether the engine takes work (the batcher's engine thread has not ended)."""
        return self.batcher.alive

    async def run(self, call: Call[Any]) -> list[Prediction]:
        """One prediction per text of the call, in order.

        Raises:
            RequestError: the batcher's refusals (a full queue or a dead engine: 503; under `error` a text over
                max_seq_len: 422; under `chunk` too many windows: 413), an explanation's (more work than the queue
                holds: 413), and `internal` for an engine failure (logged here with its traceback, never sent to
                the client).
        """
        work = await self._explain_work(call)
        try:
            answer, work_answer = await self._submit(call, work)
        except RequestError:
            raise
        except Exception:
            logger.exception("a %d-text call failed in the engine", len(call.texts))
            raise RequestError("internal", "the server failed to classify") from None
        predictions = self.scorer(answer.logits, answer.truncated, chunks=answer.chunks, **call.answer.as_kwargs())
        if work is not None and self.explaining is not None and call.explain_words is not None:
            logits = work_answer.logits if work_answer is not None else np.zeros((0, answer.logits.shape[1]))
            predictions = self.explaining.explained(work, predictions, answer.logits, logits, call.explain_words)
        for observer in self.on_answer:
            try:
                observer(call, predictions, answer)
            except Exception:  # a broken metric must not cost a client its answer
                logger.exception("an answer observer (%r) failed", observer)
        return predictions

    async def _explain_work(self, call: Call[Any]) -> ExplainWork | None:
        """The call's explanation work, planned before anything is queued; None where it asks for none."""
        if call.explain_words is None:
            return None
        if self.explaining is None:
            raise RequestError("invalid_request", "'explain': this server does not explain its predictions")
        if sum(len(text) for text in call.texts) <= INLINE_TOKENIZE_CHARS:  # as the batcher tokenizes: long ones
            return self.explaining.plan(call.texts, call.options)  # in a thread, off the event loop
        return await asyncio.get_running_loop().run_in_executor(None, self.explaining.plan, call.texts, call.options)

    async def _submit(self, call: Call[Any], work: ExplainWork | None) -> tuple[Answer, Answer | None]:
        """The call's texts, and its explanation's texts where it has any, queued together."""
        if work is None or not work.texts:
            return await self.batcher.submit(call.texts, call.options), None
        parts = [
            asyncio.ensure_future(self.batcher.submit(call.texts, call.options)),
            asyncio.ensure_future(self.batcher.submit(work.texts, work.options)),
        ]
        try:
            answer, work_answer = await asyncio.gather(*parts)
        except BaseException:  # one part refused or failed (or the client left): the other's texts leave the queue
            for part in parts:
                part.cancel()
            raise
        return answer, work_answer

    async def reply(self, adapter: Adapter[Any], call: Call[Any]) -> Reply:
        """The call run and rendered in its protocol's shape (errors are the caller's to render)."""
        return adapter.render(call, await self.run(call), self.model)
