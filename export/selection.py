"""Which variant serves, and whether one second variant takes the long texts: one engine per machine unless a second
one shows, in a repeated timing, that it earns its memory.

The serving variant is the passing CPU variant with the lowest serving cost (`VariantRecord.serving_cost`: the
geometric mean of its ms per text on real single texts, sorted real batches of 32 and real long texts), measured in
one interleaved timing with an A/A control (`textclf_export.gates.time_variants`). Costs within max(`TIE`, that run's
A/A spread) of the lowest are a tie, which the variant earlier in the registry (`textclf.inference.variants`) wins:
the noise of one run cannot swap the choice between two re-exports on one machine.

A second variant takes long texts only where it wins them clearly (`confirm_long`); otherwise one variant serves all.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from textclf.artifacts.schema import LongRoute
from textclf.inference.runtime import Classifier
from textclf.inference.timing import ROUNDS, round_median, time_interleaved
from textclf.inference.variants import VARIANTS
from textclf_export.gates import TimingRun, long_texts

logger = logging.getLogger(__name__)

TIE = 0.05  # costs closer than this (or the run's A/A spread, where larger) are a tie
MIN_LONG_GAIN = 0.10  # what a second variant must win on the long texts, in the median of the repeats
LONG_REPEATS = 5  # odd, so the median is one repeat's own reading


@dataclass
class LongTrial:
    """The repeated A/B of the serving variant and the long candidate on the real long texts."""

    candidate: str
    gains: list[float] = field(default_factory=list)  # per repeat: serving's ms ÷ the candidate's − 1
    needed: float = MIN_LONG_GAIN

    @property
    def gain(self) -> float:
        return statistics.median(self.gains)

    @property
    def kept(self) -> bool:
        return len(self.gains) >= 3 and self.gain >= self.needed


@dataclass
class Selection:
    """What export serves and why, and the record of the timing it came from (`ExportSection.serving_timing`)."""

    serving: str
    reason: str
    route: LongRoute | None = None
    record: dict[str, Any] = field(default_factory=dict)


def tolerance(run: TimingRun) -> float:
    """How close two costs must be to count as a tie in this run: max(TIE, its A/A spread)."""
    return max(TIE, run.aa_spread)


def choose_serving(costs: Mapping[str, float], tie: float) -> str:
    """The earliest variant in the registry whose cost is within `tie` (a fraction) of the lowest.

    Raises:
        ValueError: no costs.
    """
    if not costs:
        raise ValueError("no variant was timed")
    lowest = min(costs.values())
    return next(name for name in VARIANTS if name in costs and costs[name] <= lowest * (1 + tie))


def long_candidate(run: TimingRun, serving: str, among: Collection[str]) -> str | None:
    """The variant of `among` fastest on the long texts, where it beat `serving` there by MIN_LONG_GAIN in the main
    timing (else no candidate, and no repeated timing is spent on it)."""
    long_ms = {name: timing.long_ms_per_text for name, timing in run.timings.items() if name in among}
    best = min(long_ms, key=long_ms.__getitem__)
    if best == serving or long_ms[serving] < long_ms[best] * (1 + MIN_LONG_GAIN):
        return None
    return best


def confirm_long(
    classifiers: Mapping[str, Classifier], serving: str, candidate: str, texts: list[str], seconds: float, spread: float
) -> LongTrial:
    """Time `serving` and `candidate` on the real long texts LONG_REPEATS times, the order alternating.

    Each repeat is one `time_interleaved` of the two on every long text in turn (`ROUNDS` rounds; within a repeat
    the variant that opens a round alternates too), and reads the candidate's gain as serving's `round_median` ÷ the
    candidate's − 1. Repeats alternate which variant opens the first round. The candidate is kept when the median
    of the repeats' gains is at least max(MIN_LONG_GAIN, `spread`), `spread` being the main timing's A/A spread: it
    must win the middle repeat by 10 % and by more than the noise of the run.
    """
    windows = long_texts(classifiers[serving], texts)
    inputs = {name: [classifiers[name].pad([window]).inputs for window in windows] for name in (serving, candidate)}

    def call(name: str) -> Callable[[], None]:
        def run() -> None:
            for one in inputs[name]:
                classifiers[name].run_session(one)

        return run

    trial = LongTrial(candidate, needed=max(MIN_LONG_GAIN, spread))
    for repeat in range(LONG_REPEATS):
        order = (serving, candidate) if repeat % 2 == 0 else (candidate, serving)
        samples = time_interleaved({name: call(name) for name in order}, 1, ROUNDS, seconds)
        trial.gains.append(round(round_median(samples[serving]) / round_median(samples[candidate]) - 1, 4))
    logger.info("long texts, %s against %s: gains %s (needed %.3f)", candidate, serving, trial.gains, trial.needed)
    return trial


def select(
    classifiers: Mapping[str, Classifier],
    run: TimingRun,
    costs: Mapping[str, float],
    texts: list[str],
    seconds: float,
    *,
    pinned: str | None = None,
    route_long_calls: bool = True,
) -> Selection:
    """The serving variant (`pinned`, or by `choose_serving` among `costs`) and its long route, if one is kept.

    The route's threshold is the one length the long case measured: calls padded to a full window (max_seq_len
    tokens a text, as texts cut there or read in windows of it are) run on the long variant, and every shorter call
    on the serving one, where nothing was measured to say the long variant wins.
    """
    tie = tolerance(run)
    lowest = min(costs, key=costs.__getitem__)
    if pinned is not None:
        serving, why = pinned, "pinned by export.serving_variant"
    else:
        serving = choose_serving(costs, tie)
        cost = "geometric mean of ms per text on single texts, sorted batches of 32 and long texts"
        tied = f"{tie:.1%} (max of {TIE:.0%} and the timing's A/A spread)"
        why = (
            f"the lowest serving cost on real texts here: {serving} {costs[serving]:.3f} ms ({cost}; a tie within "
            f"{tied} goes to the earlier variant in the registry)"
            if serving == lowest
            else f"the earliest variant in the registry within {tied} of the lowest serving cost on real texts here: "
            f"{serving} {costs[serving]:.3f} ms, {lowest} {costs[lowest]:.3f} ms ({cost})"
        )
    record: dict[str, Any] = {
        "ms_per_text": run.ms_per_text,
        "aa_control": run.control,
        "aa_spread_by_case": run.aa_spread_by_case,
        "aa_spread": run.aa_spread,
        "tie": tie,
        "costs": dict(costs),
    }
    route = None
    candidate = long_candidate(run, serving, classifiers) if route_long_calls and serving in classifiers else None
    if not route_long_calls:
        why += "; no long route (export.route_long_calls is off)"
    elif candidate is None:
        why += f"; no long route: no other variant ran the long texts {MIN_LONG_GAIN:.0%} faster"
    else:
        trial = confirm_long(classifiers, serving, candidate, texts, seconds, run.aa_spread)
        record["long_trial"] = asdict(trial) | {"gain": trial.gain, "kept": trial.kept}
        verdict = f"{trial.gain:.1%} faster in the median of {len(trial.gains)} order-alternating repeats"
        if trial.kept:
            route = LongRoute(variant=candidate, max_short_tokens_per_text=classifiers[serving].max_seq_len - 1)
            why += f"; {route.describe()}: {verdict}"
        else:
            why += f"; no long route: {candidate} ran the long texts {verdict}, under {trial.needed:.1%}"
    logger.info("serving %s: %s", serving, why)
    return Selection(serving, why, route, record)
