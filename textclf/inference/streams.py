"""Engine copies run side by side on the cores of one process: the bulk paths' throughput mode.

One call on two intra-op threads splits every operator in two and waits for both halves; when another process takes
one core for a moment (Ray's driver and raylet, a write task, a neighbour on a shared host), the other thread waits
with it, so a slice of CPU taken costs about twice its size. Two copies of the engine on one thread each, each running
its own calls, lose only the slice itself. Seen on a 2-core AMD EPYC Zen 4 (2026-12-03, 12,000 test texts in calls of
32, `Classifier.predict`): one copy on 2 threads 461-495 texts/s, two copies on 1 thread each 550-597; with a spinning
process taking 15 % of one core, 426-431 against 501-559. The service keeps one copy (a request waits for its own call
only, and latency is what it is measured on); bulk prediction runs a copy per core (`textclf predict --streams`).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from textclf.inference.engines import Engine

Item = TypeVar("Item")
Result = TypeVar("Result")


class EngineStreams:
    """A pool of engines, each lent to one thread at a time (an OpenVINO infer request is one caller's state); the
    engines release the GIL while they run, so the calls overlap."""

    def __init__(self, engines: Sequence[Engine], warm_inputs: dict[str, np.ndarray]) -> None:
        """`warm_inputs`: one small call each engine runs once here, one engine after the other (`_warm`)."""
        if not engines:
            raise ValueError("EngineStreams needs at least one engine")
        _warm(engines, warm_inputs)
        self._free: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        for engine in engines:
            self._free.put(engine)
        self._pool = ThreadPoolExecutor(len(engines), thread_name_prefix="textclf-stream")

    def map(self, fn: Callable[[Engine, Item], Result], items: Sequence[Item]) -> Iterator[Result]:
        """`fn(engine, item)` for every item on the first free engine, results in the items' order."""

        def lent(item: Item) -> Result:
            engine = self._free.get()
            try:
                return fn(engine, item)
            finally:
                self._free.put(engine)

        return self._pool.map(lent, items)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _warm(engines: Sequence[Engine], inputs: dict[str, np.ndarray]) -> None:
    """Run every engine (each part of a routed pair) once, in turn: OpenVINO's Python binding sets up its numpy
    bridge on its first call, and two threads making that first call at once deadlock in it (seen: both streams of a
    Ray actor stuck in pybind11's `gil_safe_call_once_and_store<npy_api>`, the job hung)."""
    for engine in engines:
        for part in engine.parts():
            part.run(inputs)
