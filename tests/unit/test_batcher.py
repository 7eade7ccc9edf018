"""The greedy batcher with a fake engine and a fake clock: no model, no timing assertions."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from textclf.config import ServeConfig
from textclf.inference.text_options import TextOptions
from textclf.inference.windows import TooManyChunks, Windows
from textclf.serving.batcher import Answer, BatchStats, EngineUnavailable, GreedyBatcher, QueueFull


class FakeClock:
    """Time moves only when a test says so: a batcher that waited on the clock would never dispatch."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Tokens are words; a text's logits are (number of words, its first word's number); 'poison' fails. Under
    `chunk` a text's windows are runs of `window_words` words, each (but the first) starting with the word before it
    (an overlap of one), aggregated by the mean."""

    window_words = 3

    def __init__(self, *, gate: threading.Event | None = None) -> None:
        self.batches: list[list[list[str]]] = []
        self.gate = gate  # when set, the first batch blocks until the test releases it
        self.started = threading.Event()

    def encode(self, texts: list[str], options: object = None) -> list[list[str]]:
        return [text.split() for text in texts]

    def windows(self, encodings: list[list[str]], options: TextOptions | None = None) -> Windows[list[str]] | None:
        if options is None or options.on_overlength != "chunk":
            return None
        units, counts = [], []
        for words in encodings:
            step = self.window_words - 1
            starts = range(0, max(1, len(words) - 1), step)
            units += [words[start : start + self.window_words] for start in starts]
            counts.append(len(starts))
        return Windows(units, counts, "mean")

    def token_count(self, encoding: list[str]) -> int:
        return len(encoding)

    def infer_encoded(self, encodings: list[list[str]]) -> tuple[np.ndarray, list[bool]]:
        self.batches.append(encodings)
        self.started.set()
        if self.gate is not None and len(self.batches) == 1:
            assert self.gate.wait(10)
        if any("poison" in words for words in encodings):
            raise ValueError("poisoned batch")
        logits = np.array([[len(words), float(words[0].lstrip("t"))] for words in encodings], dtype=np.float32)
        return logits, [len(words) > 3 for words in encodings]


LIMITS = (
    "max_batch_texts",
    "max_batch_tokens",
    "max_queued_texts",
    "lookahead_texts",
    "max_chunks_per_text",
    "max_chunks_per_request",
)


def _batcher(engine: FakeEngine, **kwargs: object) -> tuple[GreedyBatcher[list[str]], list[BatchStats]]:
    """A started batcher with the serve section's defaults, except what the test sets."""
    stats: list[BatchStats] = []
    defaults = ServeConfig()
    settings: dict[str, object] = {name: getattr(defaults, name) for name in LIMITS}
    batcher: GreedyBatcher[list[str]] = GreedyBatcher(
        engine,
        clock=FakeClock(),
        on_batch=stats.append,
        **(settings | kwargs),  # type: ignore[arg-type]
    )
    batcher.start()
    return batcher, stats


async def _wait_started(engine: FakeEngine) -> None:
    while not engine.started.is_set():
        await asyncio.sleep(0.001)


def test_a_request_at_an_idle_server_runs_at_once() -> None:
    engine = FakeEngine()
    batcher, stats = _batcher(engine, max_batch_tokens=1000)

    async def main() -> Answer:
        return await asyncio.wait_for(batcher.submit(["t7 a b"]), timeout=10)

    answer = asyncio.run(main())
    batcher.close()
    assert answer.logits.tolist() == [[3.0, 7.0]] and answer.truncated == [False] and answer.chunks is None
    assert len(engine.batches) == 1 and stats[0].requests == 1
    assert stats[0].queue_wait_s == 0.0  # the fake clock never moved: nothing waited for time to pass
    assert stats[0].tokenize_s == [0.0]  # one completed request, one tokenization time


def test_waiting_requests_merge_within_the_limits_and_keep_their_order() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, stats = _batcher(engine, max_batch_texts=4, max_batch_tokens=12)
    requests = [[f"t{i} " + "w " * (i % 4), f"t{i + 100} x"] for i in range(12)]

    async def main() -> list[Answer]:
        first = asyncio.ensure_future(batcher.submit(["t1 first"]))
        await _wait_started(engine)  # the engine is busy: everything below queues behind it
        rest = [asyncio.ensure_future(batcher.submit(texts)) for texts in requests]
        await asyncio.sleep(0.01)
        gate.set()
        await first
        return await asyncio.wait_for(asyncio.gather(*rest), timeout=10)

    results = asyncio.run(main())
    batcher.close()
    for texts, answer in zip(requests, results, strict=True):
        logits, truncated = answer.logits, answer.truncated
        assert logits[:, 1].tolist() == [float(t.split()[0][1:]) for t in texts]  # each text's own row, in order
        assert logits[:, 0].tolist() == [len(t.split()) for t in texts]
        assert truncated == [len(t.split()) > 3 for t in texts]
    calls = stats[1:]
    assert sum(s.texts for s in calls) == 2 * len(requests)
    assert any(s.requests > 1 for s in calls)  # texts of different requests that waited together ran together
    assert all(s.texts <= 4 and s.tokens <= 12 for s in calls)  # no call over its limits (padding counted)
    for call in engine.batches[1:]:
        assert max(map(len, call)) - min(map(len, call)) <= 2  # neighbours in length: little padding


def test_the_oldest_text_is_always_in_the_next_call() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, _ = _batcher(engine, max_batch_texts=2)
    long_text = "t0 " + "w " * 20  # unlike everything else: grouping by length alone would leave it waiting

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        queued = [asyncio.ensure_future(batcher.submit([long_text]))]
        queued += [asyncio.ensure_future(batcher.submit([f"t{i} a"])) for i in range(2, 12)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *queued)

    asyncio.run(main())
    batcher.close()
    assert any(len(words) == 21 for words in engine.batches[1])


def test_a_request_bigger_than_the_budget_runs_alone() -> None:
    engine = FakeEngine()
    batcher, stats = _batcher(engine, max_batch_tokens=4)

    async def main() -> Answer:
        return await batcher.submit(["t1 a b c d e f"])

    logits = asyncio.run(main()).logits
    batcher.close()
    assert logits.shape == (1, 2) and stats[0].tokens == 7


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, stats = _batcher(engine, max_batch_tokens=2)  # every request below is its own batch

    async def main() -> list[object]:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        queued = [asyncio.ensure_future(batcher.submit([text])) for text in ("t2 a", "poison t3", "t4 b")]
        await asyncio.sleep(0.01)
        gate.set()
        await first
        return list(await asyncio.gather(*queued, return_exceptions=True))

    good, bad, after = asyncio.run(main())
    batcher.close()
    assert isinstance(bad, ValueError) and "poisoned" in str(bad)
    assert not isinstance(good, BaseException) and not isinstance(after, BaseException)
    assert [s.failed for s in stats] == [False, False, True, False]


def test_a_failing_call_fails_a_request_whose_other_texts_ran_elsewhere() -> None:
    engine = FakeEngine()
    batcher, _ = _batcher(engine, max_batch_texts=1)

    async def main() -> None:
        with pytest.raises(ValueError, match="poisoned"):
            await batcher.submit(["t1 a", "poison t2", "t3 b"])
        answer = await batcher.submit(["t4 c"])  # the engine goes on
        assert answer.logits[0, 1] == 4.0

    asyncio.run(main())
    batcher.close()


def test_a_full_queue_refuses_new_work() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, _ = _batcher(engine, max_batch_tokens=100, max_queued_texts=3)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        held = asyncio.ensure_future(batcher.submit(["t2", "t3"]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="limit 3"):
            await batcher.submit(["t4", "t5"])
        gate.set()
        await asyncio.gather(first, held)
        await batcher.submit(["t6", "t7", "t8"])  # room again once the queue drained

    asyncio.run(main())
    batcher.close()


def test_close_answers_everything_queued() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, stats = _batcher(engine, max_batch_tokens=100)

    async def main() -> list[Answer]:
        futures = [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(5)]
        await _wait_started(engine)
        closer = threading.Thread(target=batcher.close)
        closer.start()  # closing while requests wait: they are still answered
        gate.set()
        results = await asyncio.gather(*futures)
        closer.join(10)
        return results

    results = asyncio.run(main())
    assert [r.logits[0, 1] for r in results] == [0, 1, 2, 3, 4]
    assert sum(s.requests for s in stats) == 5
    with pytest.raises(QueueFull, match="shutting down"):  # the service answers 503 + Retry-After
        asyncio.run(batcher.submit(["t9"]))


def test_long_requests_are_tokenized_off_the_event_loop() -> None:
    engine = FakeEngine()
    seen: list[str] = []
    encode = engine.encode

    def recording_encode(texts: list[str], options: object = None) -> list[list[str]]:
        seen.append(threading.current_thread().name)
        return encode(texts, options)

    engine.encode = recording_encode  # type: ignore[method-assign]
    batcher, _ = _batcher(engine, inline_tokenize_chars=10)

    async def main() -> None:
        await batcher.submit(["t1 short"])
        await batcher.submit(["t2 " + "word " * 10])

    asyncio.run(main())
    batcher.close()
    assert seen[0] == threading.current_thread().name and seen[1] != seen[0]


def test_choose_call_groups_the_oldest_text_with_its_neighbours_in_length() -> None:
    from textclf.serving.calls import Pending, QueuedText, choose_call

    def waiting(lengths: list[int]) -> list[QueuedText]:
        pending = Pending([None] * len(lengths), lengths, 0.0, 0.0, None, None)  # type: ignore[arg-type]
        return [QueuedText(pending, i) for i in range(len(lengths))]

    queue = waiting([20, 5, 90, 21, 19, 6, 22, 95])
    chosen = choose_call(queue, max_texts=4, max_tokens=1000, lookahead=16)
    assert 0 in chosen and sorted(queue[i].length for i in chosen) == [19, 20, 21, 22]
    assert sorted(choose_call(queue, max_texts=8, max_tokens=50, lookahead=16)) == [
        0,
        3,
    ]  # 2 × 21 fits, 3 × 21 does not
    assert choose_call(waiting([500, 4, 4]), max_texts=8, max_tokens=100, lookahead=16) == [0]  # too long for company
    assert (
        max(choose_call(queue, max_texts=4, max_tokens=1000, lookahead=3)) < 3
    )  # 19, 21, 22 are out of reach  # too long for any company


def test_a_cancelled_request_leaves_the_queue() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, _ = _batcher(engine, max_batch_texts=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        doomed = asyncio.ensure_future(batcher.submit([f"t{i} gone" for i in range(2, 8)]))
        kept = asyncio.ensure_future(batcher.submit(["t9 kept"]))
        await asyncio.sleep(0.01)
        assert batcher.queued_texts == 7
        doomed.cancel()  # a timeout or a client that went away
        await asyncio.sleep(0.01)
        assert batcher.queued_texts == 1
        gate.set()
        await asyncio.gather(first, kept)

    asyncio.run(main())
    batcher.close()
    assert not any("gone" in words for call in engine.batches for words in call)


def test_a_bug_after_the_engine_call_fails_its_requests_and_the_engine_goes_on() -> None:
    class BrokenRows(FakeEngine):
        def infer_encoded(self, encodings: list[list[str]]) -> tuple[np.ndarray, list[bool]]:
            logits, truncated = super().infer_encoded(encodings)
            return (logits[:0], truncated) if encodings[0][-1] == "broken" else (logits, truncated)

    engine = BrokenRows()
    batcher, _ = _batcher(engine, max_batch_texts=1)

    async def main() -> None:
        with pytest.raises(IndexError):
            await asyncio.wait_for(batcher.submit(["t1 broken"]), timeout=10)
        answer = await asyncio.wait_for(batcher.submit(["t2 fine"]), timeout=10)
        assert answer.logits[0, 1] == 2.0

    asyncio.run(main())
    batcher.close()


def test_the_limits_come_from_the_serve_config_only() -> None:
    serve = ServeConfig(
        max_batch_texts=3,
        max_batch_tokens=77,
        max_queued_texts=99,
        lookahead_texts=5,
        max_chunks_per_text=7,
        max_chunks_per_request=66,
    )
    batcher = GreedyBatcher.from_config(FakeEngine(), serve)
    assert [getattr(batcher, name) for name in LIMITS] == [3, 77, 99, 5, 7, 66]
    with pytest.raises(TypeError):  # no second set of defaults to drift from the config
        GreedyBatcher(FakeEngine())  # type: ignore[call-arg]


class Killed(BaseException):
    """Not an Exception: what no `except Exception` in the engine thread catches."""


def test_a_dead_engine_thread_answers_everything_waiting_at_once_and_refuses_more() -> None:
    gate = threading.Event()

    class Dying(FakeEngine):
        def infer_encoded(self, encodings: list[list[str]]) -> tuple[np.ndarray, list[bool]]:
            if any("die" in words for words in encodings):
                self.started.set()
                assert gate.wait(10)
                raise Killed
            return super().infer_encoded(encodings)

    engine = Dying()
    deaths: list[BaseException | None] = []
    batcher, _ = _batcher(engine, max_batch_texts=1)
    batcher.on_death = deaths.append
    assert batcher.alive

    async def main() -> list[object]:
        killer = asyncio.ensure_future(batcher.submit(["t1 die"]))
        await _wait_started(engine)
        queued = [asyncio.ensure_future(batcher.submit([f"t{i} a", f"t{i} b"])) for i in range(2, 6)]
        await asyncio.sleep(0.01)
        assert batcher.queued_texts == 8
        gate.set()
        # No timeout to wait for: every request has its answer as soon as the thread is gone.
        answers = await asyncio.wait_for(asyncio.gather(killer, *queued, return_exceptions=True), timeout=5)
        with pytest.raises(EngineUnavailable):  # later requests are refused at once, before tokenizing
            await asyncio.wait_for(batcher.submit(["t9 late"]), timeout=5)
        return answers

    answers = asyncio.run(main())
    batcher.close(timeout_s=5)  # joins the thread: on_death runs right after the answers went out
    assert all(isinstance(a, EngineUnavailable) and a.status == 503 for a in answers), answers
    assert not batcher.alive and batcher.queued_texts == 0
    assert len(deaths) == 1 and isinstance(deaths[0], Killed)
    assert not any("late" in words for call in engine.batches for words in call)


def test_a_failure_while_picking_the_next_call_also_ends_visibly(monkeypatch: pytest.MonkeyPatch) -> None:
    import textclf.serving.batcher as batcher_module

    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    deaths: list[BaseException | None] = []
    batcher, _ = _batcher(engine, max_batch_texts=1)
    batcher.on_death = deaths.append

    def broken(*args: object) -> list[int]:
        raise RuntimeError("a bug in choose_call")

    async def main() -> list[object]:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        queued = [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(2, 5)]
        await asyncio.sleep(0.01)
        monkeypatch.setattr(batcher_module, "choose_call", broken)  # the next pick fails
        gate.set()
        return list(await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), timeout=5))

    first, *queued = asyncio.run(main())
    batcher.close(timeout_s=5)
    assert not isinstance(first, BaseException)  # the call that was running was answered normally
    assert all(isinstance(a, EngineUnavailable) for a in queued), queued
    assert not batcher.alive and isinstance(deaths[0], RuntimeError)


def test_close_is_no_death() -> None:
    deaths: list[BaseException | None] = []
    batcher, _ = _batcher(FakeEngine())
    batcher.on_death = deaths.append
    batcher.close()
    assert not batcher.alive and deaths == []


def test_a_full_queue_is_refused_before_tokenizing() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    encoded: list[list[str]] = []
    encode = engine.encode

    def recording_encode(texts: list[str], options: object = None) -> list[list[str]]:
        encoded.append(texts)
        return encode(texts, options)

    engine.encode = recording_encode  # type: ignore[method-assign]
    batcher, _ = _batcher(engine, max_batch_tokens=100, max_queued_texts=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        held = asyncio.ensure_future(batcher.submit(["t2", "t3"]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(["t4 refused"])
        gate.set()
        await asyncio.gather(first, held)

    asyncio.run(main())
    batcher.close()
    assert ["t4 refused"] not in encoded


CHUNK = TextOptions(on_overlength="chunk")


def _fake_windows(text: str) -> list[list[str]]:
    windows = FakeEngine().windows([text.split()], CHUNK)
    assert windows is not None
    return windows.units


def _mean_of_windows(text: str) -> list[float]:
    """What the fake engine's answer for a text read in windows must be: the mean of its windows' logits."""
    rows = [[len(words), float(words[0].lstrip("t"))] for words in _fake_windows(text)]
    return np.mean(np.array(rows, dtype=np.float64), axis=0).tolist()


def test_a_documents_windows_aggregate_the_same_however_the_calls_split_them() -> None:
    long_text = " ".join(f"t{i}" for i in range(1, 12))  # 5 windows of the fake engine's 3 words
    short_text = "t40 a"
    answers = []
    for max_batch_texts in (1, 8):  # every window in a call of its own, or all of them in one call
        engine = FakeEngine()
        batcher, stats = _batcher(engine, max_batch_texts=max_batch_texts, max_batch_tokens=1000)

        async def main(b: GreedyBatcher[list[str]] = batcher) -> Answer:
            return await asyncio.wait_for(b.submit([long_text, short_text], CHUNK), timeout=10)

        answers.append(asyncio.run(main()))
        batcher.close()
        assert sum(s.texts for s in stats) == 6  # 5 windows + the short text, each run once
        assert len(stats) == (6 if max_batch_texts == 1 else 1)
    for answer in answers:
        assert answer.chunks == [5, 1] and answer.truncated == [False, False]
        assert answer.logits.shape == (2, 2)  # one row per text, in the request's order
        assert answer.logits[0].tolist() == pytest.approx(_mean_of_windows(long_text), abs=1e-6)
        assert answer.logits[1].tolist() == [2.0, 40.0]
    np.testing.assert_allclose(answers[0].logits, answers[1].logits, atol=1e-6)


def test_a_documents_windows_share_calls_with_other_requests_texts() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, stats = _batcher(engine, max_batch_texts=4, max_batch_tokens=1000)
    long_text = " ".join(f"t{i}" for i in range(1, 8))  # 3 windows of 3 words

    async def main() -> list[Answer]:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        document = asyncio.ensure_future(batcher.submit([long_text], CHUNK))
        other = asyncio.ensure_future(batcher.submit(["t50 b c"]))  # another client, same length as a window
        await asyncio.sleep(0.01)
        assert batcher.queued_texts == 4  # the queue holds windows, not documents
        gate.set()
        return list(await asyncio.wait_for(asyncio.gather(first, document, other), timeout=10))

    _, document, other = asyncio.run(main())
    batcher.close()
    assert stats[1].requests == 2 and stats[1].texts == 4  # the windows and the other text in one engine call
    assert document.chunks == [3] and other.chunks is None
    assert document.logits[0].tolist() == pytest.approx(_mean_of_windows(long_text), abs=1e-6)
    assert other.logits.tolist() == [[3.0, 50.0]]


def test_the_queue_bound_counts_windows() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    batcher, _ = _batcher(engine, max_batch_tokens=100, max_queued_texts=5, max_chunks_per_request=5)
    six_windows = " ".join(f"t{i}" for i in range(1, 14))

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(["t1"]))
        await _wait_started(engine)
        held = asyncio.ensure_future(batcher.submit([" ".join(f"t{i}" for i in range(1, 8))], CHUNK))  # 3 windows
        await asyncio.sleep(0.01)
        assert batcher.queued_texts == 3
        with pytest.raises(QueueFull, match="limit 5"):  # one text, but 3 windows + 3 queued are over 5
            await batcher.submit([" ".join(f"t{i}" for i in range(1, 8))], CHUNK)
        gate.set()
        await asyncio.gather(first, held)
        with pytest.raises(TooManyChunks, match="max_chunks_per_request=5"):
            await batcher.submit([six_windows], CHUNK)

    asyncio.run(main())
    batcher.close()


def test_too_many_windows_are_refused_naming_the_limit_and_nothing_is_queued() -> None:
    engine = FakeEngine()
    batcher, _ = _batcher(engine, max_chunks_per_text=3, max_chunks_per_request=4)
    four_windows = " ".join(f"t{i}" for i in range(1, 10))
    three_windows = " ".join(f"t{i}" for i in range(1, 8))

    async def main() -> None:
        with pytest.raises(TooManyChunks, match=r"texts\[1\] needs 4 windows.*max_chunks_per_text=3") as per_text:
            await batcher.submit(["t1 a", four_windows], CHUNK)
        assert per_text.value.status == 413 and per_text.value.error_type == "too_many_chunks"
        with pytest.raises(TooManyChunks, match=r"needs 6 windows.*max_chunks_per_request=4"):
            await batcher.submit([three_windows, three_windows], CHUNK)
        assert batcher.queued_texts == 0
        answer = await batcher.submit([four_windows])  # the same text under truncate: one engine input
        assert answer.chunks is None and answer.logits.tolist() == [[9.0, 1.0]]

    asyncio.run(main())
    batcher.close()
    assert len(engine.batches) == 1


def test_a_request_with_more_windows_than_the_queue_holds_is_too_big_not_busy() -> None:
    engine = FakeEngine()
    batcher, _ = _batcher(engine, max_queued_texts=4, max_chunks_per_request=256)

    async def main() -> None:
        with pytest.raises(TooManyChunks, match=r"needs 5 windows; the limit is serve\.max_queued_texts=4"):
            await batcher.submit([" ".join(f"t{i}" for i in range(1, 12))], CHUNK)  # 5 windows, an empty queue
        assert (await batcher.submit(["t1 t2 t3 t4 t5 t6 t7"], CHUNK)).chunks == [3]

    asyncio.run(main())
    batcher.close()


def test_a_failing_window_fails_its_document_and_drops_its_other_windows() -> None:
    engine = FakeEngine()
    batcher, _ = _batcher(engine, max_batch_texts=1)
    poisoned = "t1 t2 t3 poison t5 t6 t7 t8 t9"  # the second of 4 windows fails

    async def main() -> None:
        with pytest.raises(ValueError, match="poisoned"):
            await asyncio.wait_for(batcher.submit([poisoned], CHUNK), timeout=10)
        assert batcher.queued_texts == 0
        answer = await asyncio.wait_for(batcher.submit(["t4 c"], CHUNK), timeout=10)  # the engine goes on
        assert answer.logits.tolist() == [[2.0, 4.0]] and answer.chunks == [1]

    asyncio.run(main())
    batcher.close()
    assert len(engine.batches) == 3  # window 1, window 2 (failed), then the next request: windows 3-4 never ran
