"""The benchmark tools run end to end on the tiny model and write their files (no timing is asserted)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.artifacts import validate_against_schema
from textclf.artifacts.manifest import require_export
from textclf.artifacts.records import load_report
from textclf.config import Config
from textclf.hardware import usable_cores
from textclf.inference.timing import ROUNDS
from textclf.inference.variants import variant_spec
from textclf.paths import BENCH_JSON, LOAD_JSON, REPORT_MD, RESULTS_JSON
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.envelope import engine_label
from textclf_benchmarks.schema import BenchReport, LoadReport, Results

HEADLINE_KEYS = {
    "speedup_b1_real",
    "speedup_b32_s128",
    "gemm_fraction_b32_s128",
    "http_rps_ratio_32_users",
    "http_p99_ms_32_users",
    "http_errors_32_users",
    "best_variant",
    "accuracy_delta",
    "engine_envelope_geomean",
    "engine_envelope_min",
    "engine_aa_spread",
}


@pytest.fixture(scope="module")
def bench_cfg(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> BenchmarkConfig:
    root = tmp_path_factory.mktemp("bench")
    shutil.copytree(exported_run.artifacts_root, root / "artifacts")
    tiny_sweep = {
        "batch_sizes": [1, 32],
        "seq_lens": [16, 128],
        "warmup_iters": 1,
        "min_iters": 2,
        "max_seconds_per_case": 0.05,
        "real_texts": 64,
        "use_torch_compile": False,
        "load_users": [1, 32],
        "load_seconds": 3,
        "load_warmup_seconds": 1,
        "peer_venv": str(root / "no-peer-venv"),  # the peer is reported as not installed, never run here
    }
    cfg = BenchmarkConfig.model_validate(
        exported_run.to_dict()
        | {"artifacts_root": str(root / "artifacts"), "reports_root": str(root / "reports"), "bench": tiny_sweep}
    )
    return cfg


@pytest.fixture(scope="module")
def bench_report(bench_cfg: BenchmarkConfig) -> BenchReport:
    from textclf_benchmarks.bench import run

    path = run(bench_cfg, bench_cfg.run_dir)
    assert path == bench_cfg.reports_root / "default" / BENCH_JSON
    validate_against_schema(json.loads(path.read_text()), "bench.schema.json")
    return load_report(path, BenchReport)


def test_bench_measures_every_engine_on_every_case(bench_cfg: BenchmarkConfig, bench_report: BenchReport) -> None:
    engines = {name for name, record in bench_report.engines.items() if record.loaded}
    export = require_export(bench_cfg.run_dir)
    assert export.serving_variant is not None
    passed = {engine_label(name) for name, record in export.variants.items() if record.passed}
    assert {"ort-fp32", "ort-int8-qdq", "openvino-fp32", "openvino-int8"} <= passed
    # Every variant that passed its gates (ONNX Runtime and OpenVINO, from the registry's CPU list), the serving one
    # again on one thread, and what the service runs loaded twice (the A/A pair).
    one_thread = {engine_label(export.serving_variant, "-1thread")} if usable_cores() > 1 else set()
    assert engines == {"pytorch-fp32", "served", "served-aa"} | one_thread | passed
    for name in ("openvino-fp32", "openvino-int8"):
        record = bench_report.engines[name]
        assert record.kind == "openvino" and record.variant == name and record.test_accuracy is not None
        assert record.runs and record.runs.startswith("openvino")  # the engine as it describes itself
    for name in ("served", "served-aa"):
        served = bench_report.engines[name]
        assert served.kind == variant_spec(export.serving_variant).engine and served.variant == export.serving_variant
        assert served.bytes == export.variants[export.serving_variant].bytes and served.runs
    assert bench_report.served_engine == "served"
    threads = {name: bench_report.engines[name].threads for name in engines - one_thread}
    assert set(threads.values()) == {usable_cores()}
    assert all(bench_report.engines[name].threads == 1 for name in one_thread)
    cases = {(row.engine, row.case, row.mode) for row in bench_report.rows}
    for engine in engines:
        for case in ("b1-s16", "b1-s128", "b32-s16", "b32-s128"):
            assert (engine, case, "session") in cases
        for case in ("real-b1", "real-b32", "real-b32-sorted", "long-b1", "long-b8"):
            assert (engine, case, "serving") in cases, (engine, case)
            if engine != "pytorch-fp32":  # PyTorch's real-text cost is its whole path only
                assert (engine, case, "session") in cases, (engine, case)
    long_texts = bench_report.long_texts
    assert long_texts is not None and long_texts.ran, long_texts
    assert long_texts.texts == 189 and long_texts.mean_words is not None and long_texts.mean_words > 500
    assert long_texts.max_seq_len == export.max_seq_len and long_texts.truncated  # cut at a tiny model's 32 tokens
    assert long_texts.mean_tokens is not None and long_texts.mean_tokens <= export.max_seq_len
    assert {row.mean_words for row in bench_report.rows if row.case.startswith("long-")} == {long_texts.mean_words}
    # Every case's time is the median of at least 5 interleaved rounds' medians.
    assert all(row.round_median_ms is not None and row.round_median_ms > 0 for row in bench_report.rows)
    assert min(row.iters for row in bench_report.rows) >= ROUNDS >= 5  # at least one call a round
    for row in bench_report.rows:
        assert row.iters >= 2 and 0 < row.p50_ms <= row.p99_ms + 1e-9
    roofline = bench_report.roofline
    assert roofline is not None and roofline.gemm.flops_per_s > 0 and roofline.model_flops > 0
    assert bench_report.machine.cores >= 1 and "onnxruntime" in bench_report.versions
    assert all(record.bytes > 0 for record in bench_report.engines.values())


def test_cuda_bench_skips_cleanly_without_a_gpu(bench_cfg: BenchmarkConfig) -> None:
    import torch

    from textclf_benchmarks.bench import run

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the gpu-marked test covers it")
    result = load_report(run(bench_cfg, bench_cfg.run_dir, device="cuda"), BenchReport)
    assert result.ran is False and "no CUDA" in (result.reason or "")


@pytest.mark.gpu
def test_cuda_engines_run(bench_cfg: BenchmarkConfig) -> None:
    import torch

    from textclf_benchmarks.bench import run

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    result = load_report(run(bench_cfg, bench_cfg.run_dir, device="cuda"), BenchReport)
    assert result.ran and any(row.engine.endswith("-cuda") for row in result.rows)


def test_load_and_report(bench_cfg: BenchmarkConfig, bench_report: BenchReport) -> None:
    from textclf_benchmarks.load import run as load_run
    from textclf_benchmarks.report import run as report_run

    servers = ["bento", "baseline", "infinity-optimum"]
    load_path = load_run(bench_cfg, bench_cfg.run_dir, servers=servers)
    assert load_path == bench_cfg.reports_root / "default" / LOAD_JSON
    validate_against_schema(json.loads(load_path.read_text()), "load.schema.json")
    load = load_report(load_path, LoadReport)
    export = require_export(bench_cfg.run_dir)
    for server in ("bento", "baseline"):
        record = load.servers[server]
        assert record.ran, record.reason
        # One user again right after the burst, then the long texts; the configured Bento's 32 users also through
        # the v2 and Hugging Face routes, right after the native phase.
        protocols = ["32-v2", "32-hf"] if server == "bento" else []
        assert list(record.results) == ["1", "32", *protocols, "1-after-32", "32-long"]
        for stats in record.results.values():
            assert stats.requests > 0 and stats.failures == 0
            assert stats.rps > 0 and 0 < stats.p50_ms <= stats.p95_ms <= stats.p99_ms
            assert stats.cpu_s_per_request is not None and stats.cpu_s_per_request > 0
        assert record.truncation and record.truncation.startswith(f"{export.max_seq_len} tokens")
    busy = [phase.engine_busy for phase in load.servers["bento"].results.values()]
    assert all(b is not None and 0 < b <= 1.5 for b in busy), busy  # from the service's own engine histogram
    assert load.servers["baseline"].results["32"].engine_busy is None  # no such metric there
    peer = load.servers["infinity-optimum"]
    assert not peer.ran and peer.reason and "make peer" in peer.reason
    long_texts = load.long_texts  # speech excerpts longer than the tiny model's 32 tokens: every one is cut
    assert long_texts is not None and long_texts.ran, long_texts
    assert long_texts.texts is not None and long_texts.texts > 150 and long_texts.truncated == long_texts.texts
    assert long_texts.min_tokens is not None and long_texts.max_tokens is not None
    assert 256 <= long_texts.min_tokens <= long_texts.max_tokens <= 512 and long_texts.max_seq_len == export.max_seq_len
    assert load.soak is None  # retired: the 20-second phases are the load test

    report = report_run(bench_cfg, bench_cfg.run_dir)
    out = report.parent
    raw = json.loads((out / RESULTS_JSON).read_text())
    validate_against_schema(raw, "results.schema.json")
    assert set(raw["headline"]) >= HEADLINE_KEYS  # the key names other tools read
    results = load_report(out / RESULTS_JSON, Results)
    passed = {name for name, record in export.variants.items() if record.passed}
    best = results.headline.best_variant or ""
    assert best in passed, best
    for api in ("v2", "hf"):  # each protocol route's req/s over /predict's, taken side by side
        ratio = getattr(results.headline, f"http_rps_ratio_{api}_vs_predict_32_users")
        assert ratio is not None and ratio > 0, api
    h = results.headline
    assert h.engine_envelope_geomean is not None and 0 < h.engine_envelope_geomean <= 1.5, h  # over 1.0 only by noise
    assert h.engine_envelope_min is not None and h.engine_envelope_min <= h.engine_envelope_geomean
    assert h.engine_aa_spread is not None and h.engine_aa_spread >= 0 and h.served_engine == "served"
    assert h.engine_envelope_case and "engine_envelope_geomean" in h.targets and "engine_envelope_min" not in h.targets
    cases = {(c.case, c.mode) for c in results.envelope}
    assert {("b1-s16", "session"), ("b32-s128", "session"), ("long-b8", "serving"), ("long-b8", "session")} <= cases
    assert min(c.ratio for c in results.envelope) == h.engine_envelope_min
    assert all(c.aa_ratio is not None and c.best_engine not in ("served", "served-aa") for c in results.envelope)
    assert results.long_texts == bench_report.long_texts
    model = load.servers["bento"].model  # what the Bento says it runs
    assert model is not None and model["variant"] == export.serving_variant, model
    assert results.headline.http_errors_32_users == 0 and results.headline.http_errors_max == 0
    assert results.headline.after_burst_p50_ratio is not None and results.headline.engine_busy_32_users is not None
    assert results.headline.http_rps_ratio_vs_peer_32_users is None  # the peer did not run
    assert results.headline.http_long_rps_ratio_vs_peer_32_users is None
    assert results.headline.http_long_errors == 0 and results.headline.http_long_rps_ratio_32_users is not None
    assert results.headline.targets["after_burst_p50_ratio"].at_most
    assert results.machine.cores >= 1 and results.machine.isa
    assert results.http == load and results.rows == bench_report.rows
    for png in ("speedup.png", "http.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    text = (out / REPORT_MD).read_text()
    assert "## At a glance" in text and "## HTTP load" in text and "baseline" in text
    assert "### Long texts" in text and f"cuts each text at **{export.max_seq_len} tokens**" in text
    assert "## Soak" not in text
    assert "## Engine envelope" in text and "`engine_envelope_geomean` = **" in text and "## Real long texts" in text
    assert "`engine_aa_spread` = **" in text and "| engine envelope: its worst case | reported |" in text
    assert f"its `GET /model`: `{export.serving_variant}` on " in text
    assert not (results.headline.best_engine or "").endswith("-1thread")  # the headline compares full engines


def test_report_without_bench_names_the_missing_step(tmp_path: Path, bench_cfg: BenchmarkConfig) -> None:
    from textclf.errors import ArtifactError
    from textclf_benchmarks.report import run as report_run

    cfg = bench_cfg.model_copy(update={"reports_root": tmp_path})
    with pytest.raises(ArtifactError, match="textclf bench"):
        report_run(cfg, cfg.run_dir)


def test_bench_explain_measures_the_gap_offline_and_the_cost_on_a_served_bento(
    exported_run: Config, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from textclf_benchmarks.schema import EXPLAIN_JSON, ExplainReport
    from textclf_cli.app import app

    reports = tmp_path / "reports"
    sets = ["--set", f"artifacts_root={exported_run.artifacts_root}", "--set", f"reports_root={reports}"]
    result = CliRunner().invoke(app, ["bench-explain", *sets, "--texts", "20", "--cost-texts", "6", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    report = load_report(reports / "default" / EXPLAIN_JSON, ExplainReport)
    export = require_export(exported_run.run_dir)
    assert report.variant == export.serving_variant and report.max_seq_len == export.max_seq_len
    gap = report.deletion_gap
    assert gap.texts + gap.skipped == 20 and gap.texts > 10 and (gap.k, gap.draws) == (3, 10) and gap.low <= gap.high
    cost = report.cost
    assert cost.ran, cost.reason
    assert (cost.texts, cost.rounds, cost.top_k_words) == (6, 2, 10)
    assert cost.model is not None and cost.model["variant"] == export.serving_variant  # the Bento's own `GET /model`
    assert cost.mean_explained_words is not None and cost.mean_explained_words > 3  # the tiny test sentences' words
    assert cost.plain_p50_ms and cost.explained_p50_ms and cost.plain_aa_p50_ms
    assert cost.ratio == pytest.approx(cost.explained_p50_ms / cost.plain_p50_ms)
    assert cost.aa_ratio == pytest.approx(cost.plain_aa_p50_ms / cost.plain_p50_ms)
    assert report.machine.cores >= 1 and "onnxruntime" in report.versions
