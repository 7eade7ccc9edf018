"""What the batcher queues and how it picks the next engine call among the waiting texts.

A request is one `Pending` (its tokenized texts, where their results go, how many are still to run); the queue
holds one `QueuedText` per text (or per window of a long document). `choose_call` is the batcher's one decision,
a pure function of the waiting texts' lengths: testable without a thread, an engine or a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

E = TypeVar("E")  # one tokenized text (a `tokenizers.Encoding` in the service)

# An engine call's fixed cost, in tokens of work: one text per call took 2.72 ms/text and length-sorted calls of
# 32 took 2.03 ms/text on ~25-token texts (issue 10), so ~0.7 ms per call at ~0.08 ms per token.
CALL_OVERHEAD_TOKENS = 9


@dataclass(eq=False)
class Pending(Generic[E]):
    """One request: its texts, where their results go, and how many are still to run."""

    encodings: list[E]
    lengths: list[int]
    enqueued_at: float
    tokenize_s: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[np.ndarray, list[bool]]]
    logits: np.ndarray | None = None
    truncated: list[bool] = field(default_factory=list)
    remaining: int = 0
    failed: bool = False


@dataclass(frozen=True)
class QueuedText:
    """One text (or window) of a request, waiting for an engine call."""

    pending: Pending[Any]
    index: int  # its row in the request's encodings and results

    @property
    def length(self) -> int:
        return self.pending.lengths[self.index]


def choose_call(waiting: Sequence[QueuedText], max_texts: int, max_tokens: int, lookahead: int) -> list[int]:
    """Positions (in `waiting`, oldest first) of the texts for the next engine call.

    The oldest text always goes in. Among the `lookahead` oldest waiting texts, sorted by length, the call
    is the run of neighbours around it that wastes least per text: (call overhead + padding) ÷ count, within
    `max_texts` and `max_tokens` padded tokens (a single text over the budget still runs, alone).
    """
    pool = sorted(range(min(len(waiting), max(lookahead, 1))), key=lambda i: (waiting[i].length, i))
    lengths = [waiting[i].length for i in pool]
    at = pool.index(0)
    best = (float("inf"), at, 1)
    for size in range(1, min(max_texts, len(pool)) + 1):
        for start in range(max(0, at - size + 1), min(at, len(pool) - size) + 1):
            padded = size * lengths[start + size - 1]
            if size > 1 and padded > max_tokens:
                continue
            waste = (CALL_OVERHEAD_TOKENS + padded - sum(lengths[start : start + size])) / size
            if waste <= best[0]:  # ties go to the bigger call
                best = (waste, start, size)
    _, start, size = best
    return [pool[i] for i in range(start, start + size)]
