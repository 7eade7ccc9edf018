"""One engine per machine: the serving variant by its serving cost on real texts (ties to the registry's order), at
most one second variant for long texts by one tokens-per-text threshold, kept only where a repeated, order-alternating
timing shows it winning by 10 %."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from textclf.artifacts.schema import LongRoute
from textclf.inference import timing
from textclf.inference.engines import RoutedEngine
from textclf_export import selection
from textclf_export.gates import CASES, Timing, TimingRun, time_variants
from textclf_export.selection import LongTrial, choose_serving, confirm_long, long_candidate, select


# -- the serving variant ---------------------------------------------------------------------------------------
def test_a_cost_within_the_tie_of_the_lowest_goes_to_the_variant_earlier_in_the_registry() -> None:
    # Registry order: fp32, ..., int8-qdq, int8-qdq-mha, ..., openvino-int8.
    assert choose_serving({"openvino-int8": 1.00, "int8-qdq-mha": 1.04}, 0.05) == "int8-qdq-mha"
    assert choose_serving({"int8-qdq-mha": 1.04, "openvino-int8": 1.00}, 0.05) == "int8-qdq-mha"  # not dict order
    assert choose_serving({"openvino-int8": 1.00, "int8-qdq-mha": 1.06}, 0.05) == "openvino-int8"
    # A noisier run (A/A spread 8 %) widens the tie: 6 % apart is noise there.
    assert choose_serving({"openvino-int8": 1.00, "int8-qdq-mha": 1.06}, 0.08) == "int8-qdq-mha"
    # Within the tie of the lowest, not of each other: fp32 is 9 % off the lowest, int8-qdq 4 %.
    assert choose_serving({"fp32": 1.09, "int8-qdq": 1.04, "openvino-int8": 1.0}, 0.05) == "int8-qdq"
    with pytest.raises(ValueError, match="no variant was timed"):
        choose_serving({}, 0.05)


def _run(long_ms: dict[str, float], spreads: tuple[float, float, float] = (0.01, 0.02, 0.03)) -> TimingRun:
    timings = {name: Timing(1.0, 0.5, ms) for name, ms in long_ms.items()}
    return TimingRun(timings, "x (A/A)", dict(zip(CASES, spreads, strict=True)), {})


def test_the_run_noise_floor_is_its_largest_case_spread_and_widens_the_tie_past_five_percent() -> None:
    assert _run({"fp32": 1.0}).aa_spread == 0.03
    assert selection.tolerance(_run({"fp32": 1.0})) == 0.05
    assert selection.tolerance(_run({"fp32": 1.0}, (0.01, 0.09, 0.02))) == 0.09


# -- the long route --------------------------------------------------------------------------------------------
class _Fixed:
    """A fake engine answering a constant, so a test sees which engine ran a call."""

    name = "onnxruntime"
    threads = 1

    def __init__(self, value: float) -> None:
        self.value = value
        self.input_names = ["input_ids", "attention_mask"]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.full((inputs["input_ids"].shape[0], 2), self.value, dtype=np.float32)

    def describe(self) -> str:
        return f"fixed {self.value}"

    def parts(self) -> tuple[Any, ...]:
        return (self,)


def _ids(rows: int, length: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.zeros((rows, length), np.int64), "attention_mask": np.ones((rows, length), np.int64)}


def test_shorter_calls_never_reach_the_long_variant_whatever_their_size_or_history() -> None:
    threshold = 31
    engine = RoutedEngine(_Fixed(1.0), _Fixed(2.0), threshold)  # type: ignore[arg-type]
    # Every call shape a service or a bulk job can make up to a few texts past the threshold, in an order that
    # mixes them: a call padded to at most `threshold` tokens a text runs short, however many texts, whatever
    # ran before it; longer ones run long.
    shapes = list(itertools.product((1, 2, 4, 8, 32, 64), range(1, threshold + 6)))
    for rows, length in shapes + shapes[::-1]:
        expected = 2.0 if length > threshold else 1.0
        assert engine.run(_ids(rows, length))[0, 0] == expected, (rows, length)
    assert engine.parts() == (engine.short, engine.long)
    assert LongRoute(variant="x", max_short_tokens_per_text=threshold).goes_long(threshold + 1)
    assert not LongRoute(variant="x", max_short_tokens_per_text=threshold).goes_long(threshold)


def test_a_long_candidate_must_beat_the_serving_variant_by_ten_percent_in_the_main_timing() -> None:
    run = _run({"int8-qdq-mha": 10.0, "openvino-int8": 8.0, "fp32": 9.5})
    assert long_candidate(run, "int8-qdq-mha", run.timings) == "openvino-int8"  # 25 % faster
    assert long_candidate(run, "int8-qdq-mha", ["int8-qdq-mha", "fp32"]) is None  # 5 %: not enough
    assert long_candidate(run, "openvino-int8", run.timings) is None  # the serving variant is fastest


@dataclass
class _FakeClassifier:
    name: str
    max_seq_len: int = 32

    def pad(self, encodings: list[Any]) -> Any:
        return SimpleNamespace(inputs=_ids(len(encodings), self.max_seq_len))

    def run_session(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros((inputs["input_ids"].shape[0], 2), np.float32)


def _scripted_repeats(monkeypatch: pytest.MonkeyPatch, gains: list[float]) -> list[list[str]]:
    """Each repeat's timing reads serving at 1 + gain ms and the candidate at 1 ms; returns the orders they ran in."""
    orders: list[list[str]] = []
    script = iter(gains)

    def fake_interleaved(calls: dict[str, Any], warmup: int, min_iters: int, max_seconds: float) -> Any:
        for call in calls.values():
            call()  # the real calls run, on the real inputs
        orders.append(list(calls))
        gain = next(script)
        return {"serving": [[1.0 + gain]] * 5, "candidate": [[1.0]] * 5}

    monkeypatch.setattr(selection, "time_interleaved", fake_interleaved)
    monkeypatch.setattr(selection, "long_texts", lambda classifier, texts: ["window"] * 3)
    return orders


def test_the_long_variant_is_kept_on_the_median_of_order_alternating_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    classifiers: Any = {"serving": _FakeClassifier("serving"), "candidate": _FakeClassifier("candidate")}
    orders = _scripted_repeats(monkeypatch, [0.30, 0.02, 0.20, 0.12, 0.05])
    trial = confirm_long(classifiers, "serving", "candidate", ["a text"], 0.1, spread=0.02)
    assert len(trial.gains) == selection.LONG_REPEATS >= 3
    assert orders == [["serving", "candidate"], ["candidate", "serving"]] * 2 + [["serving", "candidate"]]
    assert trial.gain == pytest.approx(0.12) and trial.kept  # the median repeat, not the best one
    # One lucky repeat does not make a route: the median is 0.05.
    _scripted_repeats(monkeypatch, [0.30, 0.02, 0.05, 0.04, 0.25])
    assert not confirm_long(classifiers, "serving", "candidate", ["a text"], 0.1, spread=0.02).kept
    # Nor a 12 % gain in a run whose A/A spread is 15 %.
    _scripted_repeats(monkeypatch, [0.12] * 5)
    noisy = confirm_long(classifiers, "serving", "candidate", ["a text"], 0.1, spread=0.15)
    assert noisy.needed == 0.15 and not noisy.kept


def test_select_records_the_choice_its_reason_and_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run({"int8-qdq-mha": 10.0, "openvino-int8": 8.0})
    costs = {"int8-qdq-mha": 1.0, "openvino-int8": 1.2}
    classifiers: Any = {name: _FakeClassifier(name) for name in costs}
    monkeypatch.setattr(selection, "confirm_long", lambda *args: LongTrial("openvino-int8", [0.2, 0.25, 0.22]))
    chosen = select(classifiers, run, costs, ["a text"], 0.1)
    assert chosen.serving == "int8-qdq-mha"
    assert chosen.route == LongRoute(variant="openvino-int8", max_short_tokens_per_text=31)  # full windows only
    assert "lowest serving cost" in chosen.reason and "calls over 31 tokens a text on openvino-int8" in chosen.reason
    assert chosen.record["aa_spread"] == 0.03 and chosen.record["long_trial"]["kept"] is True
    assert chosen.record["costs"] == costs and chosen.record["tie"] == 0.05

    off = select(classifiers, run, costs, ["a text"], 0.1, route_long_calls=False)
    assert off.route is None and "export.route_long_calls is off" in off.reason
    monkeypatch.setattr(selection, "confirm_long", lambda *args: LongTrial("openvino-int8", [0.2, 0.05, 0.08]))
    refused = select(classifiers, run, costs, ["a text"], 0.1, pinned="openvino-int8")
    assert refused.serving == "openvino-int8" and refused.route is None and "pinned" in refused.reason


# -- the timing ------------------------------------------------------------------------------------------------
class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class _TimedClassifier:
    """A fake classifier on a fake clock: `ms_per_token` for every real or padded token of a call."""

    def __init__(self, clock: _Clock, ms_per_token: float, max_seq_len: int = 24) -> None:
        self.clock, self.ms_per_token, self.max_seq_len = clock, ms_per_token, max_seq_len

    def encode(self, texts: list[str]) -> list[Any]:
        return [SimpleNamespace(ids=[0] * min(self.max_seq_len, len(t.split()) + 2)) for t in texts]

    def pad(self, encodings: list[Any]) -> Any:
        return SimpleNamespace(inputs=_ids(len(encodings), max(len(e.ids) for e in encodings)))

    def run_session(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.clock.now += inputs["input_ids"].size * self.ms_per_token / 1000
        return np.zeros((inputs["input_ids"].shape[0], 2), np.float32)


def test_every_case_is_timed_on_real_texts_with_an_a_a_control(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=clock))
    classifiers: Any = {"fp32": _TimedClassifier(clock, 0.02), "int8-qdq": _TimedClassifier(clock, 0.01)}
    texts = [" ".join(["word"] * n) for n in (3, 5, 8, 13, 21) * 10]  # 50 texts, 5 lengths
    run = time_variants(classifiers, texts, seconds=0.03)
    assert run.control == "fp32 (A/A)" and set(run.ms_per_text) == set(CASES)
    assert all(set(by_name) == {"fp32", "int8-qdq", "fp32 (A/A)"} for by_name in run.ms_per_text.values())
    assert run.aa_spread == 0.0  # one engine timed as two, on a clock without noise
    fp32, int8 = run.timings["fp32"], run.timings["int8-qdq"]
    assert fp32.latency_ms == pytest.approx(2 * int8.latency_ms, rel=1e-3)
    # Long texts are full windows: max_seq_len tokens a text, one text a call.
    assert fp32.long_ms_per_text == pytest.approx(24 * 0.02)
    # Sorted batches of 32 pad to their own longest text: less than padding all 50 texts to the longest.
    assert fp32.batch32_ms_per_text < 23 * 0.02


# -- what a Bento ships ----------------------------------------------------------------------------------------
def test_a_bento_ships_the_served_variants_then_those_build_adds() -> None:
    from tests.artifacts import export_section
    from textclf.artifacts.bento import shipped_variants
    from textclf.errors import ArtifactError

    export = export_section("fp32")
    fp32 = export.variants["fp32"]
    refused = fp32.model_copy(update={"passed": False, "reason": "parity 1e-2 > 1e-3"})
    export.variants |= {"int8-qdq": fp32, "openvino-int8": fp32, "int8-static": refused}
    assert shipped_variants(export) == ["fp32"]
    assert shipped_variants(export, ["openvino-int8", "fp32"]) == ["fp32", "openvino-int8"]
    routed = export.model_copy(update={"long_route": LongRoute(variant="int8-qdq", max_short_tokens_per_text=31)})
    assert shipped_variants(routed, ["openvino-int8"]) == ["fp32", "int8-qdq", "openvino-int8"]
    with pytest.raises(ArtifactError, match=r"--variants int8-static: not a passing variant.*fp32, int8-qdq, openvino"):
        shipped_variants(export, ["int8-static"])
