"""Export's long-call route: chosen from shape timings by the worst shape's distance to the fastest variant."""

from __future__ import annotations

import numpy as np
import pytest

from textclf.engines import RoutedEngine
from textclf.schema import ShapeTiming
from textclf_export.routing import choose_route, envelope


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
