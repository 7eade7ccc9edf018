"""Interleaved timing: every engine runs in turn, round after round, so machine drift hits all alike.

The one timer of the project: export times its candidate variants with it, the benchmarks their sweep. A case's
time is `round_median`: the median over rounds of each round's median, so neither one slow round nor one lucky one
decides. The same engine entered twice under two names (`aa_spread`) shows the noise floor of the run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# Turns per case: with 5, two instances of one engine (the served route and the variant alone) still differed by up
# to 8 % on the 2026-12-01 sweep (AMD EPYC Zen 5, 2 cores), the host's drift between their longer blocks.
ROUNDS = 10


def _timed(call: Callable[[], None]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def time_interleaved(
    calls: dict[str, Callable[[], None]], warmup: int, min_iters: int, max_seconds: float
) -> dict[str, list[list[float]]]:
    """Milliseconds per call for each named call, round by round.

    Each call is warmed up, then given as many iterations as fit `max_seconds` (at least `min_iters`), split
    over ROUNDS rounds in which the calls take turns (`round_order`): who goes first rotates from round to round
    and the others follow in a shuffled order, so no engine always follows the same neighbour (whose threads may
    still hold the cores) or always opens a round.
    """
    iterations = {}
    for name, call in calls.items():
        for _ in range(warmup):
            call()
        first = _timed(call)
        iterations[name] = max(min_iters, min(2000, int(max_seconds * 1000 / max(first, 1e-3))))
    names = list(calls)
    samples: dict[str, list[list[float]]] = {name: [] for name in calls}
    for round_ in range(ROUNDS):
        for name in round_order(names, round_):
            samples[name].append([_timed(calls[name]) for _ in range(math.ceil(iterations[name] / ROUNDS))])
    return samples


def round_order(names: list[str], round_: int) -> list[str]:
    """The order of one round: who opens rotates, and the rest follow in an order shuffled by the round's number
    (fixed, so a sweep can be repeated). A plain rotation would put every engine after the same neighbour in every
    round but one, and a neighbour whose threads still hold the cores would slow the same engine every time."""
    first = names[round_ % len(names)]
    rest = [name for name in names if name != first]
    random.Random(round_).shuffle(rest)
    return [first, *rest]


def round_best(rounds_ms: list[list[float]]) -> float:
    """The lowest over rounds of the round's median: an engine's time where one slow round (another tenant of the
    host, a neighbour's threads) cannot decide, as export's routing times variants. Two instances of one engine read
    0.78-1.08 of each other by p50 over 10-20 calls on the 2026-12-02 Zen 4 sweep."""
    return float(min(np.median(r) for r in rounds_ms if r))


def round_median(rounds_ms: list[list[float]]) -> float:
    """The median over rounds of the round's median (ms): a case's time, robust to a round the host took away."""
    return float(np.median([np.median(r) for r in rounds_ms if r]))


def aa_spread(first_ms: float, second_ms: float) -> float:
    """How far apart one engine timed as two reads: |a / b - 1|, the noise floor of a comparison in that run."""
    return abs(first_ms / second_ms - 1.0)


def summarize(rounds_ms: list[list[float]], batch: int) -> dict[str, Any]:
    values = np.asarray([v for r in rounds_ms for v in r])
    p50 = float(np.percentile(values, 50))
    return {
        "round_best_ms": round_best(rounds_ms),
        "iters": len(values),
        "p50_ms": p50,
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "seq_per_s": batch * 1000 / p50,
    }
