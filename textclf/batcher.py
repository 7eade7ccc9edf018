"""A greedy batcher that keeps one inference engine busy without ever holding a request at an idle server.

Why not BentoML's adaptive batching: its dispatcher holds a batch while the expected wait stays under the mean
wait of recent batches; that mean grows under load and never decays, so after a burst a lone request waits for
the burst's latency (measured: p50 5 ms fresh, 45–87 ms after a 32-user phase, issue 10). Here there is no
timer at all: one engine thread takes *everything that is waiting* the moment it frees (up to a token budget),
so a request at an idle server runs at once, and under load batches grow by themselves to what arrived during
the previous batch (the approach of Infinity and text-embeddings-inference).

Pipeline: requests are tokenized on arrival (in the caller's thread, overlapping the engine's current batch),
queued with their token counts, and answered through their own asyncio future. A failing batch fails only the
requests inside it. A bounded queue refuses new work with `QueueFull` (the service answers 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

E = TypeVar("E")  # one tokenized text (a `tokenizers.Encoding` in the service)


class QueueFull(Exception):
    """The queue already holds `max_queued_texts`; the request is refused instead of waiting without bound."""


class Engine(Protocol[E]):
    """What the batcher needs from a model: tokenize, measure, run. `Classifier` implements it."""

    def encode(self, texts: list[str]) -> list[E]: ...

    def token_count(self, encoding: E) -> int: ...

    def infer_encoded(self, encodings: list[E]) -> tuple[np.ndarray, list[bool]]: ...


@dataclass
class BatchStats:
    """What one engine call did, for the service's metrics."""

    requests: int
    texts: int
    tokens: int
    queue_wait_s: float  # oldest request's wait between enqueue and the engine taking it
    infer_s: float
    tokenize_s: float  # summed over the batch's requests
    failed: bool = False


@dataclass
class _Pending(Generic[E]):
    encodings: list[E]
    tokens: int
    enqueued_at: float
    tokenize_s: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[np.ndarray, list[bool]]]


def take_batch(queue: deque[_Pending[E]], max_batch_tokens: int) -> list[_Pending[E]]:
    """Pop requests in arrival order while their real tokens fit the budget (always at least one).

    A request is never split: one bigger than the budget runs alone.
    """
    batch = [queue.popleft()]
    tokens = batch[0].tokens
    while queue and tokens + queue[0].tokens <= max_batch_tokens:
        tokens += queue[0].tokens
        batch.append(queue.popleft())
    return batch


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


@dataclass
class GreedyBatcher(Generic[E]):
    """One engine thread serving a queue of tokenized requests.

    Args:
        engine: tokenizes and runs batches (`infer_encoded` sorts by length and pads per sub-batch itself).
        max_batch_tokens: real tokens taken into one engine call; bounds a batch's latency and memory.
        max_queued_texts: texts waiting (not counting the running batch) before `submit` raises QueueFull.
        inline_tokenize_chars: requests up to this many characters are tokenized on the event loop itself.
        on_batch: called in the engine thread after every batch (metrics).
        clock: a monotonic clock in seconds; tests pass a fake one.
    """

    engine: Engine[E]
    max_batch_tokens: int = 4096
    max_queued_texts: int = 4096
    inline_tokenize_chars: int = 8192
    on_batch: Callable[[BatchStats], None] | None = None
    clock: Callable[[], float] = time.perf_counter
    _queue: deque[_Pending[E]] = field(default_factory=deque, init=False)
    _queued_texts: int = field(default=0, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _closing: bool = field(default=False, init=False)
    busy_s: float = field(default=0.0, init=False)  # total time inside the engine, for the busy fraction

    def start(self) -> None:
        # A daemon thread: a worker that is killed must not hang on it; a clean shutdown drains it first.
        self._thread = threading.Thread(target=self._serve, name="textclf-engine", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Answer everything queued, then stop the engine thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    async def submit(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Logits (rows in input order) and truncation flags for one request's texts.

        Raises:
            QueueFull: the queue is at `max_queued_texts`.
            RuntimeError: the batcher is closed.
            Exception: whatever the engine raised for the batch holding this request.
        """
        loop = asyncio.get_running_loop()
        started = self.clock()
        # Tokenizing overlaps the batch the engine is running now. Short requests (the common case) are tokenized
        # right here, which costs less than a thread hop; long ones go to a thread so the event loop stays free.
        if sum(len(text) for text in texts) <= self.inline_tokenize_chars:
            encodings = self.engine.encode(list(texts))
        else:
            encodings = await loop.run_in_executor(None, self.engine.encode, list(texts))
        tokens = sum(self.engine.token_count(e) for e in encodings)
        enqueued = self.clock()
        pending = _Pending(encodings, tokens, enqueued, enqueued - started, loop, loop.create_future())
        with self._cond:
            if self._closing:
                raise RuntimeError("the batcher is shut down")
            if self._queued_texts + len(encodings) > self.max_queued_texts:
                raise QueueFull(f"{self._queued_texts} texts are already queued (limit {self.max_queued_texts})")
            self._queue.append(pending)
            self._queued_texts += len(encodings)
            self._cond.notify()
        return await pending.future

    def _next_batch(self) -> list[_Pending[E]] | None:
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            batch = take_batch(self._queue, self.max_batch_tokens)
            self._queued_texts -= sum(len(p.encodings) for p in batch)
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            self.run_batch(batch)

    def run_batch(self, batch: list[_Pending[E]]) -> None:
        """Run one batch in the calling thread and answer its requests (each on its own event loop)."""
        taken = self.clock()
        encodings = [e for pending in batch for e in pending.encodings]
        error: BaseException | None = None
        try:
            logits, truncated = self.engine.infer_encoded(encodings)
        except Exception as exc:  # this batch's requests get the error; the thread and other batches go on
            logger.exception("batch of %d texts failed", len(encodings))
            error = exc
        finished = self.clock()
        self.busy_s += finished - taken
        start = 0
        for pending in batch:
            stop = start + len(pending.encodings)
            value = None if error is not None else (logits[start:stop], truncated[start:stop])
            pending.loop.call_soon_threadsafe(_resolve, pending.future, value, error)
            start = stop
        if self.on_batch is not None:
            stats = BatchStats(
                requests=len(batch),
                texts=len(encodings),
                tokens=sum(p.tokens for p in batch),
                queue_wait_s=taken - min(p.enqueued_at for p in batch),
                infer_s=finished - taken,
                tokenize_s=sum(p.tokenize_s for p in batch),
                failed=error is not None,
            )
            try:
                self.on_batch(stats)
            except Exception:  # metrics must never stop the engine
                logger.exception("on_batch callback failed")
