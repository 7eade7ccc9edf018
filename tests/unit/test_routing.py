"""Export's long-call route: chosen from shape timings by the worst shape's distance to the fastest variant."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pytest

from textclf.artifacts.schema import ShapeTiming
from textclf.inference.engines import RoutedEngine
from textclf_export.routing import Call, case_ratios, choose_plan, choose_route, envelope, time_calls, traffic_order


def _timings(ort: list[float], ov: list[float]) -> list[ShapeTiming]:
    shapes = [(1, 32), (1, 128), (1, 512), (8, 512)]
    return [
        ShapeTiming(batch=b, seq_len=s, ms={"ort": a, "ov": o}) for (b, s), a, o in zip(shapes, ort, ov, strict=True)
    ]


def test_a_variant_faster_on_long_calls_gets_them_past_the_best_threshold() -> None:
    timings = _timings(ort=[1.0, 3.0, 20.0, 170.0], ov=[1.6, 2.9, 17.0, 126.0])
    route = choose_route(timings, "ort")
    assert route is not None and route.variant == "ov"
    assert route.max_short_tokens == 32  # 1 × 128 is already (slightly) faster on ov
    assert route.envelope_min == pytest.approx(1.0)
    assert route.envelope_min_unrouted == pytest.approx(126.0 / 170.0)


def test_no_route_when_the_serving_variant_is_fastest_or_nearly_everywhere() -> None:
    assert choose_route(_timings(ort=[1.0, 3.0, 17.0, 126.0], ov=[1.6, 3.1, 17.5, 127.0]), "ort") is None
    # 2 % better on the longest shape only: under MIN_GAIN, not worth a second engine in memory.
    assert choose_route(_timings(ort=[1.0, 3.0, 17.0, 126.0], ov=[1.6, 3.1, 17.5, 123.5]), "ort") is None


def test_envelope_is_the_worst_shapes_ratio() -> None:
    timings = _timings(ort=[1.0, 3.0, 20.0, 170.0], ov=[1.6, 2.9, 17.0, 126.0])
    assert envelope(timings, "ov", None, 0) == pytest.approx(1.0 / 1.6)
    assert envelope(timings, "ort", "ov", 128) == pytest.approx(2.9 / 3.0)


class _Fixed:
    name = "onnxruntime"
    threads = 1

    def __init__(self, value: float) -> None:
        self.value = value
        self.input_names = ["input_ids", "attention_mask"]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.full((inputs["input_ids"].shape[0], 2), self.value, dtype=np.float32)

    def describe(self) -> str:
        return f"fixed {self.value}"


def test_routed_engine_sends_calls_by_padded_tokens() -> None:
    engine = RoutedEngine(_Fixed(1.0), _Fixed(2.0), max_short_tokens=256)  # type: ignore[arg-type]
    short = {"input_ids": np.zeros((2, 128), np.int64), "attention_mask": np.ones((2, 128), np.int64)}
    long = {"input_ids": np.zeros((3, 128), np.int64), "attention_mask": np.ones((3, 128), np.int64)}
    assert engine.run(short)[0, 0] == 1.0  # 2 × 128 = 256 tokens: short
    assert engine.run(long)[0, 0] == 2.0  # 3 × 128 = 384: long


def test_routed_engine_keeps_calls_of_short_texts_short_however_many_texts() -> None:
    engine = RoutedEngine(_Fixed(1.0), _Fixed(2.0), max_short_tokens=32, max_short_length=16)  # type: ignore[arg-type]
    assert engine.run(_ids(32, 16))[0, 0] == 1.0  # 512 padded tokens, but 16 a text: short
    assert engine.run(_ids(1, 32))[0, 0] == 1.0  # 32 padded tokens: short
    assert engine.run(_ids(2, 17))[0, 0] == 2.0  # 34 tokens, 17 a text: long
    assert engine.run(_ids(8, 32))[0, 0] == 2.0


def test_where_engines_cross_over_by_text_length_the_route_takes_the_length_too() -> None:
    # The Zen 4 shape of it (reports/zen4, 2026-12-03): ort wins every call of 16-token texts, however many; ov wins
    # from 32 tokens a text at 8 texts and from 64 at one. No token count alone splits that: b8 x 16 (128 tokens)
    # must stay on ort while b1 x 64 (64 tokens) goes to ov.
    rows = [
        ((1, 16), 2.6, 3.7),
        ((1, 32), 3.8, 4.4),
        ((1, 64), 6.4, 6.0),
        ((8, 16), 10.5, 13.1),
        ((8, 32), 18.2, 13.8),
        ((8, 64), 32.3, 25.0),
        ((32, 16), 23.9, 37.7),
        ((32, 128), 280.0, 211.0),
    ]
    timings = [ShapeTiming(case=f"b{b}-s{s}", batch=b, seq_len=s, ms={"ort": a, "ov": o}) for (b, s), a, o in rows]
    route = choose_route(timings, "ort")
    assert route is not None and route.variant == "ov"
    assert (route.max_short_tokens, route.max_short_length) == (32, 16)
    assert route.envelope_min == pytest.approx(1.0)
    assert envelope(timings, "ort", "ov", 32) == pytest.approx(23.9 / 37.7)  # the token count alone: b32 x 16 on ov
    assert [route.goes_long(b, s) for (b, s), _, _ in rows] == [False, False, True, False, True, True, False, True]


# -- the joint choice over cases (synthetic shapes and real texts) ----------------------------------------------
def _real(case: str, rows: list[tuple[int, int, int, float, float]]) -> list[ShapeTiming]:
    """(batch, seq_len, calls, ms of "ort", ms of "ov") rows of one real-text case."""
    return [ShapeTiming(case=case, batch=b, seq_len=s, calls=n, ms={"ort": a, "ov": o}) for b, s, n, a, o in rows]


def test_a_real_text_case_is_judged_on_its_mean_call_and_its_calls_split_by_the_route() -> None:
    timings = _real("real-b1", [(1, 12, 3, 1.0, 2.0), (1, 40, 1, 2.0, 1.0)])
    # ort alone: mean 5/4 = 1.25 ms; ov alone: 7/4; ort on ≤ 12 tokens and ov above: (3 + 1) / 4 = 1.0.
    assert case_ratios(timings, "ort", None, 0) == {"real-b1": pytest.approx(1.0)}
    assert case_ratios(timings, "ov", None, 0) == {"real-b1": pytest.approx(1.25 / 1.75)}
    assert case_ratios(timings, "ort", "ov", 12) == {"real-b1": pytest.approx(1.25 / 1.0)}
    # Rows without a case (older manifests) are each their own case.
    old = [ShapeTiming(batch=1, seq_len=32, ms={"ort": 1.0, "ov": 2.0})]
    assert case_ratios(old, "ov", None, 0) == {"b1-s32": pytest.approx(0.5)}


def test_the_serving_variant_is_chosen_with_its_route_from_the_timing_not_before_it() -> None:
    # ov is the faster engine on every long call and nearly so on b1 × 32; the real short texts, which traffic sends
    # one at a time, are much faster on ort. Before, a separate short timing chose the serving variant and only its
    # route came from these timings; now the pair is chosen on all the cases at once: ort, long calls to ov.
    timings = [
        ShapeTiming(case="b1-s32", batch=1, seq_len=32, ms={"ort": 1.0, "ov": 1.1}),
        ShapeTiming(case="b1-s128", batch=1, seq_len=128, ms={"ort": 4.0, "ov": 3.0}),
        ShapeTiming(case="b8-s512", batch=8, seq_len=512, ms={"ort": 170.0, "ov": 126.0}),
        *_real("real-b1", [(1, 12, 10, 0.6, 0.9), (1, 20, 10, 0.7, 1.0)]),
        *_real("real-b32-sorted", [(32, 14, 2, 10.0, 12.0), (32, 40, 2, 30.0, 24.0)]),
    ]
    plan = choose_plan(timings, ["ov", "ort"])
    assert plan.serving == "ort" and plan.route is not None and plan.route.variant == "ov"
    # b1 × 32 stays on ort; every sorted batch of 32 goes to ov, where that case's mean is lower (18 vs 20 ms).
    assert plan.route.max_short_tokens == 32 and plan.envelope_min == pytest.approx(1.0)
    assert plan.route.envelope_min_unrouted == pytest.approx(126.0 / 170.0)
    alone = choose_plan(timings, ["ov", "ort"], allow_route=False)
    assert (alone.serving, alone.route) == ("ort", None) and alone.envelope_min == pytest.approx(126.0 / 170.0)


def test_a_route_must_beat_the_best_single_variant_by_the_minimum_gain() -> None:
    # ov alone is within 1 % everywhere; ort with its long calls on ov is 1 % better: not worth a second engine.
    timings = [
        ShapeTiming(case="b1-s32", batch=1, seq_len=32, ms={"ort": 1.0, "ov": 1.01}),
        ShapeTiming(case="b8-s512", batch=8, seq_len=512, ms={"ort": 140.0, "ov": 128.0}),
    ]
    plan = choose_plan(timings, ["ort", "ov"])
    assert plan.serving == "ov" and plan.route is None
    with pytest.raises(ValueError, match="was timed"):
        choose_plan(timings, ["int8-qdq"])


def test_traffic_order_never_repeats_a_shape_back_to_back_when_it_can_be_avoided() -> None:
    calls = [_call("a", 1, 16)] * 6 + [_call("b", 1, 32)] * 5 + [_call("c", 8, 16)] * 5
    for seed in range(20):
        order = traffic_order(calls, random.Random(seed))
        assert sorted(order) == list(range(len(calls)))
        assert all(calls[i].shape != calls[j].shape for i, j in itertools.pairwise(order))


def _call(case: str, batch: int, seq_len: int) -> Call:
    ids = np.zeros((batch, seq_len), np.int64)
    return Call(case, {"input_ids": ids, "attention_mask": np.ones_like(ids)})


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.round = 0

    def __call__(self) -> float:
        return self.now


class _ShapeSensitive:
    """A fake engine: `base_ms` per 100 tokens, plus `switch_ms` when a call's shape differs from its last one
    (OpenVINO's cost for a shape it has seen but did not just run), plus `noise` on chosen calls."""

    def __init__(self, clock: _Clock, base_ms: float, switch_ms: float = 0.0) -> None:
        self.clock, self.base_ms, self.switch_ms = clock, base_ms, switch_ms
        self.last: tuple[int, ...] | None = None
        self.calls = 0
        self.noisy: set[int] = set()

    def run_session(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        shape = inputs["input_ids"].shape
        ms = self.base_ms * inputs["input_ids"].size / 100 + (self.switch_ms if shape != self.last else 0.0)
        ms *= 5.0 if self.calls in self.noisy else 1.0
        self.last, self.calls = shape, self.calls + 1
        self.clock.now += ms / 1000
        return np.zeros((shape[0], 2), np.float32)


def test_the_timing_changes_shape_call_to_call_so_a_shape_change_cost_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf_export import routing

    clock = _Clock()
    monkeypatch.setattr(routing, "clock", clock)
    ort = _ShapeSensitive(clock, base_ms=0.5)
    ov = _ShapeSensitive(clock, base_ms=0.45, switch_ms=0.5)  # faster on a repeated shape, slower in traffic
    calls = [_call("b1-s32", 1, 32), _call("b1-s64", 1, 64), *(_call("real-b1", 1, n) for n in (9, 14, 21, 30))]
    timings = time_calls({"ort": ort, "ov": ov}, calls, budget_s=0.0)  # type: ignore[dict-item]
    by_case = {t.case: t for t in timings if t.case != "real-b1"}
    assert by_case["b1-s32"].ms["ov"] == pytest.approx(0.45 * 0.32 + 0.5)
    assert by_case["b1-s32"].ms["ort"] == pytest.approx(0.5 * 0.32)
    assert {t.seq_len for t in timings if t.case == "real-b1"} == {9, 14, 21, 30}
    assert choose_plan(timings, ["ov", "ort"]).serving == "ort"


def test_one_noisy_round_does_not_move_a_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf_export import routing

    clock = _Clock()
    monkeypatch.setattr(routing, "clock", clock)
    quiet, noisy = _ShapeSensitive(clock, 1.0), _ShapeSensitive(clock, 1.0)
    calls = [_call("b1-s32", 1, 32), _call("b8-s64", 8, 64), _call("real-b1", 1, 12), _call("real-b1", 1, 12)]
    # Warm-up runs each call once; then the whole second round of `noisy` is 5× slower.
    per_round = len(calls)
    noisy.noisy = set(range(per_round * 2, per_round * 3))
    timings = time_calls({"quiet": quiet, "noisy": noisy}, calls, budget_s=0.0)  # type: ignore[dict-item]
    assert len(timings) == 3 and next(t for t in timings if t.case == "real-b1").calls == 2
    for timing in timings:
        assert timing.ms["noisy"] == pytest.approx(timing.ms["quiet"])


def test_repeated_shapes_are_timed_and_send_short_repeats_to_a_variant_that_wins_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from textclf_export import routing

    clock = _Clock()
    monkeypatch.setattr(routing, "clock", clock)
    ort = _ShapeSensitive(clock, base_ms=0.5)
    ov = _ShapeSensitive(clock, base_ms=0.4, switch_ms=0.5)  # faster than ort on a shape it just ran, else slower
    calls = [_call("b1-s32", 1, 32), _call("b1-s64", 1, 64), _call("b8-s128", 8, 128)]
    timings = time_calls({"ort": ort, "ov": ov}, calls, budget_s=0.0)  # type: ignore[dict-item]
    by_case = {t.case: t for t in timings}
    assert by_case["b1-s32"].repeat_ms == {"ort": pytest.approx(0.16), "ov": pytest.approx(0.128)}
    assert by_case["b1-s32"].ms["ov"] == pytest.approx(0.628)  # in traffic order ov pays the change
    plan = choose_plan(timings, ["ort", "ov"])
    assert plan.serving == "ort" and plan.route is not None
    assert (plan.route.variant, plan.route.max_short_tokens, plan.route.long_on_repeat) == ("ov", 64, True)
    # Where ov loses one short shape even repeated, repeats stay on the serving variant.
    by_case["b1-s64"].repeat_ms = {"ort": 0.32, "ov": 0.32}
    route = choose_route(timings, "ort")
    assert route is not None and not route.long_on_repeat


class _Padding(_Fixed):
    def padded_length(self, length: int) -> int:
        return -(-length // 16) * 16


def _ids(rows: int, length: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.zeros((rows, length), np.int64), "attention_mask": np.ones((rows, length), np.int64)}


def test_routed_engine_sends_short_calls_repeating_an_exact_shape_to_the_long_engine() -> None:
    engine = RoutedEngine(
        _Fixed(1.0),
        _Padding(2.0),
        max_short_tokens=64,
        long_on_repeat=True,
        names=("ort", "ov"),  # type: ignore[arg-type]
    )
    # 10, 12 and 14 tokens are one shape for the long engine (16) but three exact shapes: they stay short. The third
    # call of a run of one exact shape goes long, and then every call of the long engine's last exact shape.
    lengths = [10, 12, 14, 9, 9, 9, 30, 9, 100, 30, 32, 32, 32, 20]
    got = [float(engine.run(_ids(1, n))[0, 0]) for n in lengths]
    assert got == [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    assert engine.take_calls() == {"ort": 10, "ov": 4}
    assert engine.calls == {"ort": 0, "ov": 0}
    plain = RoutedEngine(_Fixed(1.0), _Padding(2.0), max_short_tokens=64)  # type: ignore[arg-type]
    assert [float(plain.run(_ids(1, n))[0, 0]) for n in lengths] == [1.0] * 8 + [2.0] + [1.0] * 5
    assert plain.calls == {"short": 13, "long": 1}


class _Waking:
    """A fake engine: `base_ms` per 100 tokens plus `fixed_ms` per call, plus `wake_ms` when the call before it (on
    any engine) was not its own: OpenVINO's threads, asleep after another engine's call."""

    name = "fake"
    threads = 2

    def __init__(
        self,
        clock: _Clock,
        last: list[object],
        base_ms: float,
        fixed_ms: float = 0.0,
        wake_ms: float = 0.0,
        switch_ms: float = 0.0,
    ) -> None:
        self.input_names = ["input_ids", "attention_mask"]
        self.clock, self.last = clock, last
        self.base_ms, self.fixed_ms, self.wake_ms, self.switch_ms = base_ms, fixed_ms, wake_ms, switch_ms
        self.shape: tuple[int, ...] | None = None

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        ms = self.base_ms * inputs["input_ids"].size / 100 + self.fixed_ms
        ms += self.wake_ms if self.last and self.last[0] is not self else 0.0
        ms += self.switch_ms if inputs["input_ids"].shape != self.shape else 0.0  # OpenVINO on a changed shape
        self.last[:], self.shape = [self], inputs["input_ids"].shape
        self.clock.now += ms / 1000
        return np.zeros((inputs["input_ids"].shape[0], 2), np.float32)


class _FakeClassifier:
    def __init__(self, engine: _Waking) -> None:
        self.engine = engine
        self.max_seq_len = 512

    def run_session(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.engine.run(inputs)


def _waking_pair(clock: _Clock, wake_ms: float) -> dict[str, _FakeClassifier]:
    last: list[object] = []
    ort = _Waking(clock, last, base_ms=0.5)
    ov = _Waking(clock, last, base_ms=0.3, fixed_ms=0.5, wake_ms=wake_ms)  # slow on short calls, fast on long ones
    return {"ort": _FakeClassifier(ort), "ov": _FakeClassifier(ov)}


def _plan_calls() -> list[Call]:
    return [
        _call("b1-s16", 1, 16),
        _call("b1-s32", 1, 32),
        _call("b8-s512", 8, 512),
        _call("real-b1", 1, 12),
        _call("real-b1", 1, 20),
    ]


def test_the_leading_plans_are_varied_and_hold_the_best_single_variant() -> None:
    from textclf_export.routing import plan_label, plans_to_verify, ranked_plans

    timings = [
        ShapeTiming(case="b1-s32", batch=1, seq_len=32, ms={"ort": 1.0, "ov": 1.6, "q": 1.05}),
        ShapeTiming(case="b1-s128", batch=1, seq_len=128, ms={"ort": 3.0, "ov": 2.9, "q": 3.1}),
        ShapeTiming(case="b8-s512", batch=8, seq_len=512, ms={"ort": 170.0, "ov": 126.0, "q": 160.0}),
    ]
    ranked = ranked_plans(timings, ["ort", "ov", "q"])
    assert plan_label(ranked[0]) == "ort+ov>32" and ranked[0].envelope_min == pytest.approx(1.0)
    assert all(a.envelope_min >= b.envelope_min for a, b in itertools.pairwise(ranked))
    plans = plans_to_verify(ranked, limit=3)
    assert [p.serving for p in plans].count("ort") <= 2 and any(p.serving == "q" for p in plans)
    assert any(p.route is None for p in plans)  # the best single variant, which a route must beat
    assert [plan_label(p) for p in ranked_plans(timings, ["ort", "ov"], allow_route=False)] == ["ort", "ov"]


@pytest.mark.parametrize(("wake_ms", "chosen"), [(9.0, "ort"), (2.0, "ort+ov>32")])
def test_plans_are_chosen_as_timed_when_served_not_as_their_variants_predict(
    monkeypatch: pytest.MonkeyPatch, wake_ms: float, chosen: str
) -> None:
    # ov is faster on b8 x 512 alone (12.8 vs 20.5 ms), so the prediction routes it there; served after ort's calls
    # it also pays its wake-up: at 9 ms the route is slower than ort alone, at 2 ms still faster.
    from textclf_export import routing

    clock = _Clock()
    monkeypatch.setattr(routing, "clock", clock)
    classifiers = _waking_pair(clock, wake_ms)
    calls = _plan_calls()
    timings = time_calls(classifiers, calls, budget_s=0.0)  # type: ignore[arg-type]
    predicted = choose_plan(timings, ["ort", "ov"])
    assert routing.plan_label(predicted) == "ort+ov>32" and predicted.envelope_min == pytest.approx(1.0)
    plans = routing.plans_to_verify(routing.ranked_plans(timings, ["ort", "ov"]))
    plan, records, plan_timings = routing.verify_plans(classifiers, calls, plans, budget_s=0.0)  # type: ignore[arg-type]
    assert routing.plan_label(plan) == chosen
    by_label = {r.label: r for r in records}
    routed = by_label["ort+ov>32"]
    ov_alone, ort_served = 0.3 * 4096 / 100 + 0.5, 0.5 * 4096 / 100
    assert routed.modeled_envelope == pytest.approx(1.0)
    assert routed.measured_envelope == pytest.approx(ov_alone / (ov_alone + wake_ms))  # ov's call after ort's
    assert by_label["ort"].measured_envelope == pytest.approx(ov_alone / ort_served)
    assert all(set(t.ms) >= {"ort", "ov", "ort+ov>32"} for t in plan_timings)
    if plan.route is not None:  # the route records what was measured, not what was predicted
        assert plan.route.envelope_min == pytest.approx(routed.measured_envelope)
        assert plan.route.envelope_min_unrouted == pytest.approx(ov_alone / ort_served)


def _repeat_winner(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], list[Call], list[ShapeTiming]]:
    """ort, and ov slower on a shape change but faster on a repeated shape, timed on the plans' calls."""
    from textclf_export import routing

    clock = _Clock()
    monkeypatch.setattr(routing, "clock", clock)
    last: list[object] = []
    classifiers = {
        "ort": _FakeClassifier(_Waking(clock, last, base_ms=0.5)),
        "ov": _FakeClassifier(_Waking(clock, last, base_ms=0.3, switch_ms=0.5)),
    }
    calls = _plan_calls()
    return classifiers, calls, time_calls(classifiers, calls, budget_s=0.0)  # type: ignore[arg-type]


def test_plans_are_judged_on_repeated_shapes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # ov is slower than ort on short calls whose shape changes and faster on a repeated one: the plan that sends
    # repeats to ov and its twin that does not tie in traffic; the runs of one shape tell them apart.
    from textclf_export import routing

    classifiers, calls, timings = _repeat_winner(monkeypatch)
    ranked = routing.ranked_plans(timings, ["ort", "ov"])
    labels = [routing.plan_label(p) for p in ranked]
    assert labels[:2] == ["ort+ov>32/repeat", "ort+ov>32"]
    plan, records, plan_timings = routing.verify_plans(classifiers, calls, ranked[:2], budget_s=0.0)  # type: ignore[arg-type]
    assert {t.case for t in plan_timings} >= {"b1-s16 repeated", "b1-s32 repeated"}
    measured = {r.label: r.measured_envelope for r in records}
    assert measured["ort+ov>32/repeat"] == pytest.approx(1.0)
    assert measured["ort+ov>32"] == pytest.approx(0.3 / 0.5)  # b1 x 16 repeated: ov 0.048 ms, ort 0.08
    assert routing.plan_label(plan) == "ort+ov>32/repeat"


def test_a_route_is_timed_with_repeats_long_even_where_its_variants_repeats_predicted_against_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As above, but the variants' own runs of one shape had ov no faster on b1 x 16 (the host's noise): the
    # prediction keeps repeats short, its twin that sends them long is timed beside it, and the timing decides.
    from textclf_export import routing

    classifiers, calls, timings = _repeat_winner(monkeypatch)
    for timing in timings:
        if timing.case == "b1-s16" and timing.repeat_ms:
            timing.repeat_ms = {"ort": 0.08, "ov": 0.08}
    ranked = routing.ranked_plans(timings, ["ort", "ov"])
    assert [routing.plan_label(p) for p in ranked[:2]] == ["ort+ov>32", "ort+ov>32/repeat"]
    plan, _, _ = routing.verify_plans(classifiers, calls, routing.plans_to_verify(ranked), budget_s=0.0)  # type: ignore[arg-type]
    assert routing.plan_label(plan) == "ort+ov>32/repeat"
