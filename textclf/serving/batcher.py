"""A continuous batcher that keeps one inference engine busy without ever holding a request at an idle server.

Why not BentoML's batchable APIs: their dispatcher holds a batch while the expected wait stays under the mean
wait of recent batches; that mean grows under load and never decays, so after a burst a lone request waits for
the burst's latency (measured: p50 5 ms fresh, 45–87 ms after a 32-user phase, issue 10). Here there is no
timer at all: one engine thread picks its next call the moment it frees, from the texts waiting *then*, so a
request at an idle server runs at once and nothing stays slow after a burst (the approach of Infinity and
text-embeddings-inference).

Each engine call is small (`max_batch_texts`, `max_batch_tokens` of padding included) and chosen at text level:
the oldest waiting text always goes in (no text starves), together with the waiting texts closest to it in
length (little padding). A request's texts may span several calls; it is answered when its last text is done.
Small calls keep the queue moving: a text that arrives just after a call started waits for that call only, not
for a whole merged batch (measured: with whole-queue batches, 2-3 % of requests at 32 users missed a cycle and
took 2.5× the median).

A long document read in windows (`on_overlength: chunk`, `textclf.inference.windows`) is queued as its windows,
each one a text to the queue: they share calls with other requests' texts, count against `max_queued_texts`, and
the request is answered when its last window is done, with each document's windows aggregated once, after the
last one.

Requests are tokenized on arrival (in the caller's thread, overlapping the engine's current call) and answered
through their own asyncio future. A failing call fails only the requests with a text inside it. A bounded queue
refuses new work with `QueueFull` (the service answers 503 + Retry-After), checked before tokenizing so a refused
request costs nothing. If the engine thread ends for any reason but `close()` (a bug, a BaseException from the
engine), every request it held or queued is answered `EngineUnavailable` (503) at once, later ones too, `alive`
turns False and `on_death` runs: a dead engine must never leave clients waiting for their timeout.

The queue and the engine thread's life and death stay in this module: they share one lock and one invariant (every
text queued is answered exactly once). What a queued request is, and the choice of a call among the waiting texts
(a pure function, no lock), live in `textclf.serving.calls`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from textclf.errors import RequestError
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions
from textclf.inference.windows import Windows
from textclf.serving.calls import Pending, QueuedText, choose_call

if TYPE_CHECKING:
    from textclf.config import ServeConfig

logger = logging.getLogger(__name__)

E = TypeVar("E")  # one tokenized text (a `tokenizers.Encoding` in the service)
# Requests up to this many characters are tokenized on the event loop: cheaper than a thread hop (a few hundred
# µs of Rust at most), while a long one would stall every other client on the loop.
INLINE_TOKENIZE_CHARS = 8192
ENGINE_GONE = "the inference engine of this worker stopped; it is being restarted, retry shortly"


class QueueFull(RequestError):
    """The queue already holds `max_queued_texts` (or the batcher is closing): refused, not left waiting."""

    def __init__(self, message: str) -> None:
        super().__init__("overloaded", message)


class EngineUnavailable(RequestError):
    """The engine thread has ended: nothing queued or submitted can run in this worker any more (503)."""

    def __init__(self, message: str = ENGINE_GONE) -> None:
        super().__init__("engine_unavailable", message)


class Engine(Protocol[E]):
    """What the batcher needs from a model: tokenize (and under `chunk` split into windows), measure, run.
    `Classifier` implements it."""

    def encode(self, texts: list[str], options: TextOptions = DEFAULT_OPTIONS) -> list[E]: ...

    def windows(self, encodings: list[E], options: TextOptions = DEFAULT_OPTIONS) -> Windows[E] | None: ...

    def token_count(self, encoding: E) -> int: ...

    def infer_encoded(self, encodings: list[E]) -> tuple[np.ndarray, list[bool]]: ...


@dataclass(frozen=True)
class Answer:
    """One request's result: a row of logits and a truncation flag per text, in input order."""

    logits: np.ndarray
    truncated: list[bool]
    chunks: list[int] | None = None  # read in windows (`chunk`): how many each text took; else None
    # Tokens the model read of each text, after truncation (read in windows: its first window's, what `truncate`
    # would read), for the metrics and the drift window; None where a batcher does not count them.
    tokens: list[int] | None = None


@dataclass
class BatchStats:
    """What one engine call did, for the service's metrics."""

    requests: int  # requests with at least one text in the call
    texts: int  # engine inputs: texts, or a long document's windows
    tokens: int  # padded: texts × the longest text's tokens
    queue_wait_s: float  # the oldest text's wait between arrival and the engine taking it
    infer_s: float
    tokenize_s: list[float]  # one per request this call completed
    failed: bool = False


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


@dataclass
class GreedyBatcher(Generic[E]):
    """One engine thread serving a queue of tokenized texts. The service builds it with `from_config`, so its
    limits have one home: `ServeConfig` (`serve.*` in configs/default.yaml).

    Args:
        engine: tokenizes and runs calls (`infer_encoded` pads a call to its own longest text).
        max_batch_texts: texts per engine call.
        max_batch_tokens: padded tokens (texts × longest) per engine call; bounds a call's latency and memory.
        max_queued_texts: texts waiting (not counting the running call) before `submit` raises QueueFull; a
            document read in windows counts each window.
        max_chunks_per_text: windows one text may take (`chunk` policy) before `submit` raises TooManyChunks.
        max_chunks_per_request: windows one request may take before `submit` raises TooManyChunks (or
            `max_queued_texts`, where that is smaller: such a request could never be queued).
        lookahead_texts: how far past the oldest waiting text a call may reach for texts of similar length. A
            text is never overtaken by one that arrived more than this many texts after it, which bounds the
            tail latency; a longer reach pads less.
        inline_tokenize_chars: requests up to this many characters are tokenized on the event loop itself.
        on_batch: called in the engine thread after every call (metrics).
        on_death: called once in the engine thread when it ends other than by `close()`, after every waiting
            request has been answered; gets what ended it (the service exits the worker so it is restarted).
        clock: a monotonic clock in seconds; tests pass a fake one.
    """

    engine: Engine[E]
    max_batch_texts: int
    max_batch_tokens: int
    max_queued_texts: int
    lookahead_texts: int
    max_chunks_per_text: int
    max_chunks_per_request: int
    inline_tokenize_chars: int = INLINE_TOKENIZE_CHARS
    on_batch: Callable[[BatchStats], None] | None = None
    on_death: Callable[[BaseException | None], None] | None = None
    clock: Callable[[], float] = time.perf_counter
    _waiting: deque[QueuedText] = field(default_factory=deque, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _closing: bool = field(default=False, init=False)
    _ended: bool = field(default=False, init=False)  # the engine thread is gone (or going): nothing more runs

    @classmethod
    def from_config(
        cls,
        engine: Engine[E],
        serve: ServeConfig,
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_death: Callable[[BaseException | None], None] | None = None,
    ) -> GreedyBatcher[E]:
        """The batcher with the limits of the `serve` config section."""
        return cls(
            engine,
            max_batch_texts=serve.max_batch_texts,
            max_batch_tokens=serve.max_batch_tokens,
            max_queued_texts=serve.max_queued_texts,
            lookahead_texts=serve.lookahead_texts,
            max_chunks_per_text=serve.max_chunks_per_text,
            max_chunks_per_request=serve.max_chunks_per_request,
            on_batch=on_batch,
            on_death=on_death,
        )

    def start(self) -> None:
        # A daemon thread: a worker that is killed must not hang on it; a clean shutdown drains it first.
        self._thread = threading.Thread(target=self._serve, name="textclf-engine", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Answer everything queued, then stop the engine thread (blocks: call it off the event loop)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """The engine thread runs and takes work: False before `start`, after `close` and once it has died."""
        return self._thread is not None and self._thread.is_alive() and not self._ended

    @property
    def queued_texts(self) -> int:
        return len(self._waiting)

    def _check_room(self, count: int) -> None:
        """Raise if `count` more texts cannot be queued now; the caller holds `_cond`."""
        if self._closing:
            raise QueueFull("the server is shutting down")
        if self._ended:
            raise EngineUnavailable()
        if len(self._waiting) + count > self.max_queued_texts:
            raise QueueFull(f"{len(self._waiting)} texts or windows are already queued (limit {self.max_queued_texts})")

    async def submit(self, texts: Sequence[str], options: TextOptions = DEFAULT_OPTIONS) -> Answer:
        """Logits (rows in input order) and truncation flags for one request's texts, tokenized as `options` say;
        under `chunk` each text's row aggregates its windows', and the answer says how many each took.

        Raises:
            QueueFull: the queue is at `max_queued_texts`, or the batcher is shutting down.
            TooManyChunks: under `chunk`, a text or the request needs more windows than the limits allow.
            EngineUnavailable: the engine thread has ended (before or while this request waited).
            Exception: whatever the engine raised for a call holding one of this request's texts.
        """
        with self._cond:  # refused before any tokenizing: a request that cannot be queued costs nothing
            self._check_room(len(texts))  # (a lower bound under `chunk`: every text is at least one window)
        loop = asyncio.get_running_loop()
        started = self.clock()
        # Tokenizing overlaps the call the engine is running now. Short requests (the common case) are tokenized
        # right here, which costs less than a thread hop; long ones go to a thread so the event loop stays free.
        # `encode` also refuses over-length texts in `on_overlength=error` mode: that check lives only there.
        if sum(len(text) for text in texts) <= self.inline_tokenize_chars:
            encodings = self.engine.encode(list(texts), options)
        else:
            encodings = await loop.run_in_executor(None, self.engine.encode, list(texts), options)
        if not encodings:
            return Answer(np.zeros((0, 0), dtype=np.float32), [])
        # One call per request, None unless the request's policy is `chunk`: the truncate path does no work per text.
        windows = self.engine.windows(encodings, options)
        first_window_tokens: list[int] | None = None
        if windows is not None:
            first_window_tokens = [self.engine.token_count(e) for e in encodings]
            # The queue counts windows: a request with more than it can ever hold is refused as too big, not busy.
            if self.max_queued_texts < self.max_chunks_per_request:
                windows.check(self.max_chunks_per_text, self.max_queued_texts, "serve.max_queued_texts")
            else:
                windows.check(self.max_chunks_per_text, self.max_chunks_per_request)
            encodings = windows.units
        enqueued = self.clock()
        pending = Pending(
            encodings=encodings,
            lengths=[self.engine.token_count(e) for e in encodings],
            enqueued_at=enqueued,
            tokenize_s=enqueued - started,
            loop=loop,
            future=loop.create_future(),
            truncated=[False] * len(encodings),
            remaining=len(encodings),
        )
        with self._cond:
            # Again, now in windows: others may have filled the queue while this one tokenized.
            self._check_room(len(encodings))
            self._waiting.extend(QueuedText(pending, i) for i in range(len(encodings)))
            self._cond.notify()
        try:
            logits, truncated = await pending.future
        except asyncio.CancelledError:  # the client gave up (timeout, disconnect): its queued texts need no engine
            self._drop(pending)
            raise
        if windows is None:
            return Answer(logits, truncated, tokens=pending.lengths)
        # Once per document, after its last window: nothing of a document is cut, so nothing is flagged truncated.
        return Answer(windows.aggregate(logits), [False] * len(windows.counts), windows.counts, first_window_tokens)

    def _drop(self, pending: Pending[Any]) -> None:
        """Take a request's remaining texts out of the queue (it failed or was cancelled)."""
        with self._cond:
            pending.failed = True
            kept = [text for text in self._waiting if text.pending is not pending]
            if len(kept) != len(self._waiting):
                self._waiting = deque(kept)

    def _next_call(self) -> list[QueuedText] | None:
        # A failed or cancelled request's texts are already out of the queue (`_drop`): everything here is wanted.
        with self._cond:
            while not self._waiting:
                if self._closing:
                    return None
                self._cond.wait()
            chosen = choose_call(self._waiting, self.max_batch_texts, self.max_batch_tokens, self.lookahead_texts)
            texts = [self._waiting[i] for i in chosen]
            for position in sorted(chosen, reverse=True):
                del self._waiting[position]
            return texts

    def _serve(self) -> None:
        running: list[QueuedText] = []
        ended_by: BaseException | None = None
        try:
            while (texts := self._next_call()) is not None:
                running = texts
                try:
                    self.run_call(texts)
                except Exception as exc:  # a bug after the engine call: fail this call's requests, keep the thread
                    logger.exception("engine thread: answering a call failed")
                    for pending in {id(t.pending): t.pending for t in texts}.values():
                        if not pending.future.done():
                            self._fail(pending, exc)
                running = []
        except BaseException as exc:  # anything that ends the thread: answered below, never left to a timeout
            ended_by = exc
        finally:
            self._end(running, ended_by)

    def _end(self, running: list[QueuedText], ended_by: BaseException | None) -> None:
        """The engine thread is ending: every request it held or queued gets a 503 now, and so will later ones."""
        with self._cond:
            self._ended = True
            expected = self._closing and ended_by is None
            left = [*running, *self._waiting]
            self._waiting.clear()
        requests = {id(t.pending): t.pending for t in left if not t.pending.failed and t.pending.remaining > 0}
        for pending in requests.values():
            pending.failed = True
            self._answer(pending, None, EngineUnavailable())
        if expected:
            return
        logger.critical(
            "the engine thread died; %d waiting requests were answered 503", len(requests), exc_info=ended_by
        )
        if self.on_death is not None:
            try:
                self.on_death(ended_by)
            except Exception:
                logger.exception("on_death callback failed")

    def _fail(self, pending: Pending[Any], error: BaseException) -> None:
        """Answer a request with an error and take its other texts, wherever they wait, out of the queue."""
        self._drop(pending)
        self._answer(pending, None, error)

    @staticmethod
    def _answer(pending: Pending[Any], value: Any, error: BaseException | None) -> None:
        try:
            pending.loop.call_soon_threadsafe(_resolve, pending.future, value, error)
        except RuntimeError:  # its event loop is closed: nobody is waiting any more
            logger.debug("dropped an answer for a closed event loop")

    def run_call(self, texts: list[QueuedText]) -> None:
        """Run one engine call in the calling thread; answer each request whose last text it held."""
        taken = self.clock()
        error: BaseException | None = None
        try:
            logits, truncated = self.engine.infer_encoded([t.pending.encodings[t.index] for t in texts])
        except Exception as exc:  # this call's requests get the error; the thread and other calls go on
            logger.exception("engine call of %d texts failed", len(texts))
            error = exc
        finished = self.clock()
        requests: dict[int, Pending[Any]] = {}
        for row, text in enumerate(texts):
            pending = text.pending
            requests[id(pending)] = pending
            if pending.failed:
                continue
            if error is not None:
                self._fail(pending, error)
                continue
            if pending.logits is None:
                pending.logits = np.empty((len(pending.encodings), logits.shape[1]), dtype=np.float32)
            pending.logits[text.index] = logits[row]
            pending.truncated[text.index] = truncated[row]
            pending.remaining -= 1
            if pending.remaining == 0:
                self._answer(pending, (pending.logits, pending.truncated), None)
        if self.on_batch is not None:
            done = [p for p in requests.values() if p.remaining == 0 or p.failed]
            stats = BatchStats(
                requests=len(requests),
                texts=len(texts),
                tokens=len(texts) * max(t.length for t in texts),
                queue_wait_s=taken - min(t.pending.enqueued_at for t in texts),
                infer_s=finished - taken,
                tokenize_s=[p.tokenize_s for p in done],
                failed=error is not None,
            )
            try:
                self.on_batch(stats)
            except Exception:  # metrics must never stop the engine
                logger.exception("on_batch callback failed")
