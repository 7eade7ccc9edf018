"""Benchmark arithmetic: FLOP counts, percentiles, interleaving, the headline and the report text."""

from __future__ import annotations

import copy

import pytest

from benchmarks.markdown import render
from benchmarks.report import TARGETS, headline, speedups
from benchmarks.roofline import bert_flops
from benchmarks.timing import summarize, time_interleaved

MINILM = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}


def test_bert_flops_by_hand() -> None:
    s, h, i = 128, 384, 1536
    per_layer = 3 * 2 * s * h * h + 2 * s * h * h + 2 * s * s * h * 2 + 2 * 2 * s * h * i
    assert bert_flops(MINILM, 1, s) == 6 * per_layer + 2 * h * h
    assert bert_flops(MINILM, 32, s) == 32 * bert_flops(MINILM, 1, s)


def test_summarize_percentiles() -> None:
    stats = summarize([float(v) for v in range(1, 101)], batch=4)
    assert stats["iters"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["seq_per_s"] == pytest.approx(4 * 1000 / 50.5)


def test_interleaving_gives_every_call_its_iterations() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    samples = time_interleaved(calls, warmup=1, min_iters=10, max_seconds=0.0)
    assert len(samples["a"]) == len(samples["b"]) == 10
    timed = order[4:]  # after the warm-up and first timing of each
    assert timed[:2] == ["a", "a"] and "b" in timed[:6], "calls take turns round by round"


def _bench() -> dict:
    def row(engine: str, case: str, mode: str, p50: float, seq_len: int | None) -> dict:
        return {
            "engine": engine,
            "case": case,
            "mode": mode,
            "p50_ms": p50,
            "p95_ms": p50,
            "p99_ms": p50,
            "seq_per_s": 1.0,
            "iters": 10,
            "batch": 32,
            "seq_len": seq_len,
        }

    engines = {
        "pytorch-fp32": {
            "kind": "pytorch",
            "bytes": 90e6,
            "test_accuracy": 0.82,
            "accuracy_delta": 0.0,
            "loaded": True,
        },
        "ort-fp32": {
            "kind": "onnxruntime",
            "variant": "fp32",
            "bytes": 90e6,
            "test_accuracy": 0.82,
            "accuracy_delta": 0.0,
            "loaded": True,
        },
        "ort-int8-static": {
            "kind": "onnxruntime",
            "variant": "int8-static",
            "bytes": 60e6,
            "test_accuracy": 0.818,
            "accuracy_delta": -0.002,
            "loaded": True,
        },
    }
    rows = [
        row("pytorch-fp32", "real-b1", "serving", 20.0, None),
        row("ort-fp32", "real-b1", "serving", 8.0, None),
        row("ort-int8-static", "real-b1", "serving", 5.0, None),
        row("ort-fp32", "real-b1", "session", 4.0, None),
        row("pytorch-fp32", "b32-s128", "session", 900.0, 128),
        row("ort-fp32", "b32-s128", "session", 600.0, 128),
        row("ort-int8-static", "b32-s128", "session", 450.0, 128),
    ]
    return {
        "engines": engines,
        "rows": rows,
        "roofline": {
            "gemm": {"flops_per_s": 100e9, "size": 2048, "threads": 2},
            "case": {"batch": 32, "seq_len": 128},
            "model_flops": 90e9,
        },
    }


def test_speedups_and_headline() -> None:
    bench = _bench()
    assert speedups(bench)["ort-int8-static"] == {"real-b1": 4.0, "b32-s128": 2.0}
    assert "real-b1" in speedups(bench)["ort-fp32"]  # session rows of real texts are not compared with PyTorch
    load = {
        "servers": {
            "bento": {"results": {"32": {"rps": 120.0, "p99_ms": 500.0, "failures": 0}}},
            "baseline": {"results": {"32": {"rps": 20.0, "p99_ms": 3000.0, "failures": 0}}},
        }
    }
    h = headline(bench, load)
    assert h["best_variant"] == "int8-static"
    assert h["speedup_b1_real"] == 4.0 and h["speedup_b32_s128"] == 2.0
    assert h["gemm_fraction_b32_s128"] == pytest.approx((90e9 / 0.45) / 100e9)
    assert h["http_rps_ratio_32_users"] == 6.0 and h["http_p99_ms_32_users"] == 500.0
    assert h["http_errors_32_users"] == 0 and h["accuracy_delta"] == -0.002
    assert set(TARGETS) <= set(h["targets"])
    assert h["targets"]["speedup_b1_real"]["met"] is True
    assert h["targets"]["gemm_fraction_b32_s128"]["met"] is True  # 200 GFLOP/s vs a 100 GFLOP/s GEMM


def test_headline_without_load_results() -> None:
    h = headline(_bench(), None)
    assert h["http_rps_ratio_32_users"] is None
    assert h["targets"]["http_rps_ratio_32_users"]["met"] is False


def test_report_text_names_missed_targets_plainly() -> None:
    bench = _bench()
    slow = copy.deepcopy(bench)
    for row in slow["rows"]:
        if row["engine"] != "pytorch-fp32":
            row["p50_ms"] = row["p50_ms"] * 3
    results = {
        "run": "r",
        "created_at": "now",
        "headline": headline(slow, None),
        "engines": slow["engines"],
        "speedups": speedups(slow),
        "roofline": slow["roofline"],
        "rows": slow["rows"],
        "http": None,
        "gpu": {"ran": False, "reason": "no CUDA"},
        "plots": ["speedup.png"],
        "versions": {"onnxruntime": "x"},
        "machine": {
            "cpu_model": "cpu",
            "arch": "x86_64",
            "cores": 2,
            "isa": {"avx2": True},
            "gpu": None,
            "python": "3.11",
        },
    }
    text = render(results)
    assert text.index("## At a glance") < text.index("## Targets") < text.index("## Engines")
    assert "**missed**" in text and "**not measured**" in text
    assert "Not measured: no CUDA" in text
    assert "![speedup.png](speedup.png)" in text
