"""Which engine serves which call: the serving variant and its long-call route, chosen together from one
interleaved timing of every passing CPU variant on the calls traffic makes.

ONNX Runtime's int8 wins short calls and OpenVINO's int8 long ones on some CPUs (issue 20's table: ORT 1.65× faster
on single ~27-token texts, OpenVINO 1.3-1.5× from 128 tokens up). One variant serves every call unless another is
faster on the long ones: then calls over a padded-token threshold go to it.

The timing covers cases of two kinds: synthetic shapes (batch × length, token ids of real text) and real test texts
(one at a time over lengths spread across the test split, and sorted batches of 32, as the service and `textclf
predict` batch them). Every round runs every call once in a fresh order where consecutive calls differ in shape, as
traffic does (OpenVINO pays ~0.5 ms when a call's shape differs from the last one, even a shape it has seen: a timing
that repeats one shape favours it). Each variant runs the round's calls in a block of its own, the variants' order
rotating round to round, so the machine's drift falls on all alike; a block, not call by call, because a worker runs
one engine: with every call on every variant in turn, each call found the caches full of six other variants' weights
(2026-12-02, 2-core Intel Xeon, default run, int8-qdq-mha / openvino-int8 ms: b1 × 32 3.92 / 4.59 call by call, 2.91 /
2.87 in blocks; real-b1 3.81 / 4.61 and 2.82 / 3.14). A call's time is the lowest over rounds of the round's median for
its shape: one noisy round cannot decide. A case's time is the mean over its calls. ONNX Runtime runs without spinning
pool threads, as the service runs it: with them, the next variant's call shares the cores with the last one's spinning
threads (measured on the default run, 2-core AMD EPYC Zen 5: `openvino-int8` at b1 × 32 took 4.5 and 14.5 ms in two
timings with ORT spinning, 2.8 ms without; the plans chosen differed each time).

Synthetic shapes are also timed in runs of one shape (`repeat_ms`), as bulk rows cut at max_seq_len or a client
sending one length make them: where the route's variant is faster than the serving one on every short shape
repeated, the route takes short calls whose shape repeats too (`ServingRoute.long_on_repeat`).

A plan (serving variant, optional route) is judged by its envelope: over the cases, the worst ratio of the fastest
variant's time to the time of what the plan runs (1.0 = always the fastest). The plan with the best envelope wins; a
plan with a route must beat the best plan without one by `MIN_GAIN` (a second engine costs memory).

The variants' own timings only predict a routed plan's time: the pair, run as served, pays for handing the cores from
one engine to the other (OpenVINO's threads wait for work a while, then sleep; a call after an ONNX Runtime call
wakes them). Measured on the default run, 2-core AMD EPYC Zen 4, 2026-12-02: `openvino-int8` at b1 x 36 took 2.72
ms after its own call, 3.38 ms after an ONNX Runtime one; on real single texts the routed pair (int8-static, over 32
tokens on openvino-int8) took 3.50 ms per call against 2.77 for int8-qdq-mha alone, where the prediction said 0.919
of the fastest. So the leading plans by prediction (`VERIFY_PLANS`) are timed again as served, each a RoutedEngine
over the very engines timed alone, interleaved with them, in traffic and in runs of one shape, and the plan with the
best measured envelope is chosen (`verify_plans`). Without the runs of one shape, a plan's repeats were never judged
(the 2026-12-02 Zen 4 export chose the twin without them; the sweep then found b1 x 16 repeated at 1.94 ms on the
pair against 1.27 on openvino-int8).
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from textclf.artifacts.schema import PlanTiming, ServingRoute, ShapeTiming, route_goes_long
from textclf.inference.engines import RoutedEngine
from textclf.inference.runtime import Classifier, length_order

logger = logging.getLogger(__name__)

BATCHES = (1, 8)
SEQ_LENS = (16, 32, 64, 128, 256, 512)
# The benchmarks' headline shape, and many short texts at once: where a route by token count alone goes wrong
# (b32 x 16 is 512 padded tokens, yet ONNX Runtime's int8 ran it 1.6x faster than OpenVINO's on the Zen 4).
EXTRA_SHAPES = ((32, 16), (32, 128))
REAL_SINGLE_TEXTS = 24  # real texts one at a time, at evenly spaced quantiles of the test split's lengths
REAL_BATCH = 32
REAL_BATCHES = 4  # sorted batches of 32, evenly spaced along the length order
MIN_ROUNDS = 5
MAX_ROUNDS = 20
MIN_GAIN = 0.03
# Calls of one shape in a row, the first REPEAT_SETTLE not counted: OpenVINO's calls after a block of ONNX Runtime
# ones take a few calls to settle (median of 25 runs, default run, 2-core AMD EPYC Zen 4, 2026-12-03, ms by call:
# b1 x 16 3.98, 3.13, 2.95 ... 2.79 by the 16th; b1 x 64 6.55, 6.09, 6.00, 5.80 ...; b8 x 16 13.6, 13.3, 14.9,
# then ~13.5), so a run of 6 counting all but the first judged OpenVINO on calls a long run of one shape never pays.
REPEAT_RUN = 14
REPEAT_SETTLE = 4
REPEAT_ROUNDS = 3
REPEAT_MAX_TOKENS = 1024  # repeats are timed on the synthetic shapes up to this many tokens (the short calls)
VERIFY_PLANS = 6  # the plans timed as served: the leading ones by prediction (and the best single variant)
VERIFY_PER_SERVING = 3  # at most this many of them on one serving variant
# The plans' timing gets this many times the variants' budget: a median over rounds needs more of them than a min
# (5 rounds, the minimum, were all the variants' budget bought on the 2-core Zen 4).
VERIFY_BUDGET = 2.0
clock = time.perf_counter  # seconds; the tests swap in a fake clock


@dataclass(frozen=True)
class Call:
    """One timed engine call: its case and its padded inputs."""

    case: str
    inputs: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        rows, length = next(iter(self.inputs.values())).shape
        return int(rows), int(length)


@dataclass(frozen=True)
class Plan:
    """What export serves: a variant, the route of its long calls (or none), and the plan's envelope."""

    serving: str
    route: ServingRoute | None
    envelope_min: float


def shapes(max_seq_len: int) -> list[tuple[int, int]]:
    grid = [(b, s) for b in BATCHES for s in SEQ_LENS if s <= max_seq_len]
    return grid + [(b, s) for b, s in EXTRA_SHAPES if s <= max_seq_len]


def shape_case(batch: int, seq_len: int) -> str:
    return f"b{batch}-s{seq_len}"


def _inputs(classifier: Classifier, ids: list[int], batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """A call of `batch` rows of exactly `seq_len` real tokens, cut from the texts' token ids end to end."""
    while len(ids) < batch * seq_len:
        ids = ids + ids
    rows = np.asarray(ids[: batch * seq_len], dtype=np.int64).reshape(batch, seq_len)
    columns = {"input_ids": rows, "attention_mask": np.ones_like(rows), "token_type_ids": np.zeros_like(rows)}
    return {name: columns[name] for name in classifier.input_names}


def _spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices evenly spaced over range(count) (each at the middle of its share), or all of them."""
    if count <= wanted:
        return list(range(count))
    return [int((k + 0.5) * count / wanted) for k in range(wanted)]


def plan_calls(classifier: Classifier, texts: list[str]) -> list[Call]:
    """The calls of every case: each synthetic shape once, then the real-text calls (`real-b1`, `real-b32-sorted`)."""
    encodings = classifier.tokenizer.encode_batch(texts)  # tokenized once (truncated at max_seq_len)
    ids = [i for encoding in encodings[:200] for i in encoding.ids]
    calls = [Call(shape_case(b, s), _inputs(classifier, ids, b, s)) for b, s in shapes(classifier.max_seq_len)]
    by_length = length_order([len(e.ids) for e in encodings])
    for position in _spread(len(by_length), REAL_SINGLE_TEXTS):
        calls.append(Call("real-b1", classifier.pad([encodings[by_length[position]]]).inputs))
    batches = [by_length[i : i + REAL_BATCH] for i in range(0, len(by_length) - REAL_BATCH + 1, REAL_BATCH)]
    for index in _spread(len(batches), REAL_BATCHES):
        calls.append(Call(f"real-b{REAL_BATCH}-sorted", classifier.pad([encodings[i] for i in batches[index]]).inputs))
    return calls


def traffic_order(calls: Sequence[Call], rng: random.Random, last: tuple[int, int] | None = None) -> list[int]:
    """A random order of the calls in which no call has the shape of the one before it (the first: not `last`, the
    shape that ran just before), where that can be had.

    Each next call is drawn at random among the shapes other than the last one's, weighted by their calls left, unless
    a shape holds more than half of what is left (then it must go now, or two of its calls would end up adjacent).
    """
    left: dict[tuple[int, int], list[int]] = {}
    for i, call in enumerate(calls):
        left.setdefault(call.shape, []).append(i)
    for members in left.values():
        rng.shuffle(members)
    order: list[int] = []
    while left:
        remaining = len(calls) - len(order)
        options = [shape for shape in left if shape != last] or list(left)
        urgent = [shape for shape in options if 2 * len(left[shape]) > remaining]
        shape = urgent[0] if urgent else rng.choices(options, weights=[len(left[s]) for s in options])[0]
        order.append(left[shape].pop())
        if not left[shape]:
            del left[shape]
        last = shape
    return order


def time_calls(
    classifiers: Mapping[str, Classifier],
    calls: Sequence[Call],
    budget_s: float,
    *,
    seed: int = 0,
    repeats: bool = True,
    over_rounds: Callable[[list[float]], float] = min,
) -> list[ShapeTiming]:
    """Every variant on every call, interleaved: MIN_ROUNDS rounds, more while `budget_s` lasts (MAX_ROUNDS at
    most). One record per (case, shape): `over_rounds` (the lowest, by default) of the round's median ms, by
    variant; with `repeats`, the short synthetic shapes timed in runs of one shape too (`repeat_ms`)."""
    names = list(classifiers)
    for call in calls:  # warm-up: a shape's first call prepares it (OpenVINO: several ms), paid once in traffic
        for name in names:
            classifiers[name].run_session(call.inputs)
    rng = random.Random(seed)
    # samples[round][name][call index]
    samples: list[dict[str, list[float]]] = []
    order: list[int] = []
    started = clock()
    while len(samples) < MIN_ROUNDS or (
        len(samples) < MAX_ROUNDS and (clock() - started) * (1 + 1 / len(samples)) < budget_s
    ):
        times = {name: [0.0] * len(calls) for name in names}
        order = traffic_order(calls, rng, calls[order[-1]].shape if samples else None)
        for name in _rotated(names, len(samples)):
            for i in order:
                times[name][i] = _call_ms(classifiers[name], calls[i])
        samples.append(times)
    logger.info("timed %d calls on %d variants over %d rounds", len(calls), len(names), len(samples))
    repeat_times = _time_repeats(classifiers, calls) if repeats else {}
    groups: dict[tuple[str, tuple[int, int]], list[int]] = {}
    for i, call in enumerate(calls):
        groups.setdefault((call.case, call.shape), []).append(i)
    timings = []
    for (case, (batch, seq_len)), members in groups.items():
        ms = {
            name: round(over_rounds([statistics.median(times[name][i] for i in members) for times in samples]), 4)
            for name in names
        }
        repeat_ms = repeat_times.get(members[0]) if len(members) == 1 else None
        timings.append(
            ShapeTiming(case=case, batch=batch, seq_len=seq_len, calls=len(members), ms=ms, repeat_ms=repeat_ms)
        )
    for logged in dict.fromkeys(t.case for t in timings):
        rows = [t for t in timings if t.case == logged]
        logger.info("%s: %s", logged, {n: round(_mean(rows, lambda t, n=n: t.ms[n]), 3) for n in names})
    return timings


def _rotated(names: list[str], shift: int) -> list[str]:
    """`names` starting at `shift` (modulo their number): who goes first changes from round to round."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def _call_ms(classifier: Classifier, call: Call) -> float:
    """One engine call's wall time in ms, on the module's `clock`."""
    tick = clock()
    classifier.run_session(call.inputs)
    return (clock() - tick) * 1000


def _time_repeats(classifiers: Mapping[str, Classifier], calls: Sequence[Call]) -> dict[int, dict[str, float]]:
    """Per synthetic call up to REPEAT_MAX_TOKENS: each variant's median ms over a run of REPEAT_RUN calls of its
    shape (the first REPEAT_SETTLE left out: they follow another shape or engine), the lowest over REPEAT_ROUNDS
    rounds."""
    names = list(classifiers)
    synthetic = [
        i
        for i, call in enumerate(calls)
        if call.case == shape_case(*call.shape) and call.shape[0] * call.shape[1] <= REPEAT_MAX_TOKENS
    ]
    best: dict[int, dict[str, float]] = {i: {} for i in synthetic}
    for round_ in range(REPEAT_ROUNDS):
        for k, i in enumerate(synthetic):
            for name in _rotated(names, k + round_):
                times = [_call_ms(classifiers[name], calls[i]) for _ in range(REPEAT_RUN)]
                ms = round(statistics.median(times[REPEAT_SETTLE:]), 4)
                best[i][name] = min(best[i].get(name, ms), ms)
    for i in synthetic:
        logger.info("%s repeated: %s", calls[i].case, best[i])
    return best


def time_shapes(classifiers: Mapping[str, Classifier], texts: list[str], seconds_per_shape: float) -> list[ShapeTiming]:
    """`time_calls` over `plan_calls` of the test texts, within `seconds_per_shape` × the synthetic shapes."""
    first = next(iter(classifiers.values()))
    calls = plan_calls(first, texts)
    return time_calls(classifiers, calls, seconds_per_shape * len(shapes(first.max_seq_len)))


def _case_of(timing: ShapeTiming) -> str:
    return timing.case or shape_case(timing.batch, timing.seq_len)  # older manifests: one shape, one case


def _mean(rows: Sequence[ShapeTiming], value: Callable[[ShapeTiming], float]) -> float:
    """The mean per call over a case's rows (each weighs its number of calls)."""
    return sum((t.calls or 1) * value(t) for t in rows) / sum(t.calls or 1 for t in rows)


def case_ratios(
    timings: list[ShapeTiming], short: str, long: str | None, max_short_tokens: int, max_short_length: int = 0
) -> dict[str, float]:
    """Per case: the fastest variant's mean time ÷ the mean time of what the route runs for the case's calls."""
    cases: dict[str, list[ShapeTiming]] = {}
    for timing in timings:
        cases.setdefault(_case_of(timing), []).append(timing)

    def runs(t: ShapeTiming) -> str:
        if long is None or not route_goes_long(t.batch, t.seq_len, max_short_tokens, max_short_length):
            return short
        return long

    ratios = {}
    for case, rows in cases.items():
        best = min(_mean(rows, lambda t, v=v: t.ms[v]) for v in rows[0].ms)
        ratios[case] = best / _mean(rows, lambda t: t.ms[runs(t)])
    return ratios


def envelope(
    timings: list[ShapeTiming], short: str, long: str | None, max_short_tokens: int, max_short_length: int = 0
) -> float:
    """min over cases of (fastest variant's time ÷ the time of what the route runs for that case)."""
    return min(case_ratios(timings, short, long, max_short_tokens, max_short_length).values())


def wins_repeats(
    timings: list[ShapeTiming], serving: str, long: str, max_short_tokens: int, max_short_length: int = 0
) -> bool:
    """Whether `long` beat `serving` by MIN_GAIN on every short synthetic shape timed in runs of one shape."""
    short = [
        t.repeat_ms
        for t in timings
        if t.repeat_ms
        and not route_goes_long(t.batch, t.seq_len, max_short_tokens, max_short_length)
        and serving in t.repeat_ms
        and long in t.repeat_ms
    ]
    return bool(short) and all(ms[long] * (1 + MIN_GAIN) <= ms[serving] for ms in short)


def best_route(timings: list[ShapeTiming], serving: str) -> ServingRoute | None:
    """The route of `serving`'s long calls with the best envelope (the lowest threshold among equals), taking the
    short calls whose shape repeats too where its variant won them all (`wins_repeats`): the first routed plan of
    `ranked_plans` for `serving` alone."""
    return next((plan.route for plan in ranked_plans(timings, [serving]) if plan.route is not None), None)


def choose_route(timings: list[ShapeTiming], serving: str) -> ServingRoute | None:
    """The long-call route that lifts the serving variant's worst case most, or None when none helps enough."""
    route = best_route(timings, serving)
    if route is None or route.envelope_min < route.envelope_min_unrouted * (1 + MIN_GAIN):
        return None
    return route


def choose_plan(timings: list[ShapeTiming], candidates: Sequence[str], *, allow_route: bool = True) -> Plan:
    """The serving variant among `candidates` and its route, by envelope over the timed cases.

    Raises:
        ValueError: no timings, or no candidate among the timed variants.
    """
    timed = [name for name in candidates if timings and name in timings[0].ms]
    if not timed:
        raise ValueError(f"none of {list(candidates)} was timed")
    plans = []
    for serving in timed:
        route = choose_route(timings, serving) if allow_route else None
        value = route.envelope_min if route else envelope(timings, serving, None, 0)
        plans.append(Plan(serving, route, value))
    unrouted = max((p.envelope_min for p in plans if p.route is None), default=0.0)

    def score(plan: Plan) -> float:
        # A second engine must earn its memory against the best single variant, not only against its own.
        return plan.envelope_min if plan.route is None or plan.envelope_min >= unrouted * (1 + MIN_GAIN) else 0.0

    chosen = max(plans, key=score)  # among equals, the first candidate
    route = chosen.route
    by_case = (
        case_ratios(timings, chosen.serving, route.variant, route.max_short_tokens, route.max_short_length)
        if route
        else case_ratios(timings, chosen.serving, None, 0)
    )
    logger.info(
        "serving %s%s: worst case %.3f of the fastest (%s)",
        chosen.serving,
        f", {route.describe()}" + (" (and shorter ones repeating a shape)" if route.long_on_repeat else "")
        if route
        else " alone",
        chosen.envelope_min,
        ", ".join(f"{case} {ratio:.3f}" for case, ratio in by_case.items()),
    )
    return chosen


def plan_label(plan: Plan) -> str:
    """`serving`, or `serving+variant>tokens` (`&len>L` where it also takes the texts' padded length, `/repeat` where
    short calls repeating a shape go to it too)."""
    route = plan.route
    if route is None:
        return plan.serving
    per_text = f"&len>{route.max_short_length}" if route.max_short_length else ""
    repeats = "/repeat" if route.long_on_repeat else ""
    return f"{plan.serving}+{route.variant}>{route.max_short_tokens}{per_text}{repeats}"


def _rules(timings: list[ShapeTiming]) -> list[tuple[int, int]]:
    """The (max_short_tokens, max_short_length) pairs worth judging: each of the timed token counts (or none) with
    each of the synthetic lengths (or none), one pair for each way of splitting the timed calls between the engines
    (the lowest thresholds of the pairs that split them alike: a pure token count first, then a pure length)."""
    tokens = [0, *sorted({t.batch * t.seq_len for t in timings})]
    lengths = [0, *sorted({s for s in SEQ_LENS if any(t.seq_len > s for t in timings)})]
    rules: dict[tuple[bool, ...], tuple[int, int]] = {}
    for length in lengths:
        for threshold in tokens:
            split = tuple(route_goes_long(t.batch, t.seq_len, threshold, length) for t in timings)
            if any(split) and not all(split):
                rules.setdefault(split, (threshold, length))
    return list(rules.values())


def ranked_plans(timings: list[ShapeTiming], candidates: Sequence[str], *, allow_route: bool = True) -> list[Plan]:
    """Every plan the timings can judge, best predicted envelope first: each candidate alone, and with each other
    variant taking its long calls by each rule of `_rules` (`long_on_repeat` where it won every short shape
    repeated)."""
    timed = [name for name in candidates if timings and name in timings[0].ms]
    plans = [Plan(serving, None, envelope(timings, serving, None, 0)) for serving in timed]
    if allow_route:
        rules = _rules(timings)
        alone = {plan.serving: plan.envelope_min for plan in plans}
        for serving in timed:
            for variant in timings[0].ms:
                if variant == serving:
                    continue
                for threshold, length in rules:
                    value = envelope(timings, serving, variant, threshold, length)
                    route = ServingRoute(
                        variant=variant,
                        max_short_tokens=threshold,
                        max_short_length=length,
                        envelope_min=value,
                        envelope_min_unrouted=alone[serving],
                        long_on_repeat=wins_repeats(timings, serving, variant, threshold, length),
                    )
                    # And its twin with the other repeat rule, after it: the variants' repeats only predict which
                    # rule wins, and on the 2-core Zen 4 they predicted wrong (2026-12-06, default run: b1 x 16
                    # repeated 1.88 ms on openvino-int8 against 1.86 on int8-qdq-mha among the variants, so no
                    # plan sent repeats long; 1.22 against 1.97 two minutes later, when the plans were timed).
                    twin = route.model_copy(update={"long_on_repeat": not route.long_on_repeat})
                    plans += [Plan(serving, route, value), Plan(serving, twin, value)]
    order = {name: i for i, name in enumerate(timed)}  # among equals: the earlier candidate, the lower threshold
    return sorted(plans, key=lambda p: (-p.envelope_min, order[p.serving], p.route is not None))


def plans_to_verify(ranked: list[Plan], limit: int = VERIFY_PLANS, per_serving: int = VERIFY_PER_SERVING) -> list[Plan]:
    """The leading `limit` plans, at most `per_serving` of one serving variant (the prediction's near-ties between
    variants are what the noise decides), the best single variant among them (what a route must beat)."""
    chosen: list[Plan] = []
    for plan in ranked:
        if len(chosen) == limit:
            break
        if sum(p.serving == plan.serving for p in chosen) < per_serving:
            chosen.append(plan)
    best_alone = next((p for p in ranked if p.route is None), None)
    if best_alone is not None and best_alone not in chosen:
        chosen = [*chosen[: limit - 1], best_alone]
    return chosen


class _Served:
    """A plan as the service runs it: `Classifier.run_session` over the RoutedEngine `route_long_calls` builds."""

    def __init__(self, engine: RoutedEngine) -> None:
        self.engine = engine

    def run_session(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.engine.run(inputs)


def _routed(classifiers: Mapping[str, Classifier], plan: Plan) -> Any:
    """The plan's engine: the serving variant's, its long calls routed to the route variant's (the very engine
    objects timed alone, so no second copy of either model)."""
    if plan.route is None:
        return classifiers[plan.serving]
    route = plan.route
    short, long = classifiers[plan.serving].engine, classifiers[route.variant].engine
    return _Served(
        RoutedEngine(
            short,
            long,
            route.max_short_tokens,
            max_short_length=route.max_short_length,
            long_on_repeat=route.long_on_repeat,
        )
    )


def measured_envelopes(timings: list[ShapeTiming], variants: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Per plan label: min over cases of (the fastest of `variants` alone ÷ the plan's own time), means per case."""
    cases: dict[str, list[ShapeTiming]] = {}
    for timing in timings:
        cases.setdefault(_case_of(timing), []).append(timing)
    worst = dict.fromkeys(labels, float("inf"))
    for rows in cases.values():
        best = min(_mean(rows, lambda t, v=v: t.ms[v]) for v in variants)
        for label in labels:
            worst[label] = min(worst[label], best / _mean(rows, lambda t, n=label: t.ms[n]))
    return worst


def verify_plans(
    classifiers: Mapping[str, Classifier], calls: Sequence[Call], plans: Sequence[Plan], budget_s: float
) -> tuple[Plan, list[PlanTiming], list[ShapeTiming]]:
    """Time `plans` as served, interleaved with their variants alone, and choose by measured envelope (a routed
    plan must beat the best single variant measured by MIN_GAIN, as in `choose_plan`).

    Returns:
        The chosen plan (its route's envelopes as measured), every plan's record, and the timings.
    """
    variants = list(dict.fromkeys(v for p in plans for v in (p.serving, *([p.route.variant] if p.route else []))))
    contenders = {name: classifiers[name] for name in variants}
    for plan in plans:
        if plan.route is not None:
            contenders[plan_label(plan)] = _routed(classifiers, plan)
    # The median over rounds, not the lowest: what a call costs after the call before it (another engine's, in a
    # routed plan) changes with each round's order, and the lowest would keep the luckiest order's.
    timings = time_calls(contenders, calls, budget_s, seed=1, repeats=False, over_rounds=statistics.median)
    # The short shapes in runs of one shape are cases of their own here: where a plan sends repeats long, that is
    # where it earns it (a bulk file cut at one length, a client sending one length).
    for i, ms in _time_repeats(contenders, calls).items():
        batch, seq_len = calls[i].shape
        timings.append(ShapeTiming(case=f"{calls[i].case} repeated", batch=batch, seq_len=seq_len, calls=1, ms=ms))
    labels = [plan_label(p) for p in plans]
    measured = measured_envelopes(timings, variants, list(dict.fromkeys(labels + variants)))
    records = [
        PlanTiming(
            label=label,
            serving=plan.serving,
            route=plan.route,
            modeled_envelope=plan.envelope_min,
            measured_envelope=measured[label],
        )
        for plan, label in zip(plans, labels, strict=True)
    ]
    unrouted = max((measured[p.serving] for p in plans if p.route is None), default=0.0)

    def score(plan: Plan) -> float:
        value = measured[plan_label(plan)]
        return value if plan.route is None or value >= unrouted * (1 + MIN_GAIN) else 0.0

    chosen = max(plans, key=score)  # among equals, the earlier (better predicted) plan
    route = chosen.route
    if route is not None:
        route = route.model_copy(
            update={"envelope_min": measured[plan_label(chosen)], "envelope_min_unrouted": measured[chosen.serving]}
        )
    logger.info(
        "plans timed as served: %s; chosen %s",
        ", ".join(f"{r.label} {r.measured_envelope:.3f} (predicted {r.modeled_envelope:.3f})" for r in records),
        plan_label(chosen),
    )
    return Plan(chosen.serving, route, measured[plan_label(chosen)]), records, timings


def choose_measured_plan(
    classifiers: Mapping[str, Classifier],
    texts: list[str],
    seconds_per_shape: float,
    candidates: Sequence[str],
    *,
    allow_route: bool = True,
) -> tuple[Plan, list[ShapeTiming], list[PlanTiming], list[ShapeTiming]]:
    """The serving plan: every variant timed alone (`time_shapes`), the leading predicted plans then timed as
    served (`verify_plans`). Returns the plan, the variants' timings, the plans' records and their timings."""
    first = next(iter(classifiers.values()))
    calls = plan_calls(first, texts)
    budget = seconds_per_shape * len(shapes(first.max_seq_len))
    timings = time_calls(classifiers, calls, budget)
    predicted = choose_plan(timings, candidates, allow_route=allow_route)
    ranked = ranked_plans(timings, candidates, allow_route=allow_route)
    plans = plans_to_verify(ranked)
    # Every variant the plans run is timed alone, so each is a plan too (a route's variant may serve best alone).
    alone = {p.serving: p for p in ranked if p.route is None}
    used = dict.fromkeys(v for p in plans for v in (p.serving, *([p.route.variant] if p.route else [])))
    plans += [alone[v] for v in used if v in alone and alone[v] not in plans]
    if len(plans) < 2 and predicted.route is None:
        return predicted, timings, [], []
    chosen, records, plan_timings = verify_plans(classifiers, calls, plans, budget * VERIFY_BUDGET)
    return chosen, timings, records, plan_timings
