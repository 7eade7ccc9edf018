"""`textclf report`: results.json (with the headline object), report.md and PNG plots from one run's files."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from benchmarks import plots
from benchmarks.markdown import render
from textclf.config import Config
from textclf.errors import ArtifactError
from textclf.manifest import atomic_write_text, now_iso
from textclf.paths import BENCH_JSON, LOAD_JSON, REPORT_MD, RESULTS_JSON

logger = logging.getLogger(__name__)

BASELINE_ENGINE = "pytorch-fp32"
# What users hold us to (see the benchmarks issue); the report says plainly which are met.
TARGETS = {
    "speedup_b1_real": 4.0,
    "speedup_b32_s128": 2.0,
    "gemm_fraction_b32_s128": 1.3,
    "http_rps_ratio_32_users": 6.0,
}


def _p50(rows: list[dict[str, Any]], engine: str, case: str, mode: str) -> float | None:
    for row in rows:
        if row["engine"] == engine and row["case"] == case and row["mode"] == mode:
            return float(row["p50_ms"])
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def speedups(bench: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each engine's p50 speed-up over PyTorch eager fp32 per case (real texts: whole path; synthetic: model)."""
    rows = bench["rows"]
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["engine"] == BASELINE_ENGINE or (row["mode"] == "session" and row["seq_len"] is None):
            continue
        mode = "serving" if row["seq_len"] is None else "session"
        value = _ratio(_p50(rows, BASELINE_ENGINE, row["case"], mode), row["p50_ms"])
        if value is not None:
            out.setdefault(row["engine"], {})[row["case"]] = value
    return out


def headline(bench: dict[str, Any], load: dict[str, Any] | None) -> dict[str, Any]:
    """The figures a newcomer reads first, all from this run's own measurements."""
    by_engine = speedups(bench)
    candidates = {
        name: values
        for name, values in by_engine.items()
        if bench["engines"][name]["kind"] == "onnxruntime" and "real-b1" in values and "b32-s128" in values
    }
    result: dict[str, Any] = {key: None for key in (*TARGETS, "best_variant", "accuracy_delta")}
    if candidates:
        best = max(candidates, key=lambda n: math.sqrt(candidates[n]["real-b1"] * candidates[n]["b32-s128"]))
        record = bench["engines"][best]
        best_p50 = _p50(bench["rows"], best, "b32-s128", "session")
        roofline = bench["roofline"]
        achieved = roofline["model_flops"] / (best_p50 / 1000) if best_p50 else None
        result |= {
            "best_variant": record.get("variant"),
            "best_engine": best,
            "speedup_b1_real": candidates[best]["real-b1"],
            "speedup_b32_s128": candidates[best]["b32-s128"],
            "speedup_b32_real": candidates[best].get("real-b32"),
            "gemm_fraction_b32_s128": _ratio(achieved, roofline["gemm"]["flops_per_s"]),
            "achieved_gflops_b32_s128": achieved / 1e9 if achieved else None,
            "gemm_gflops": roofline["gemm"]["flops_per_s"] / 1e9,
            "accuracy_delta": record.get("accuracy_delta"),
            "test_accuracy": record.get("test_accuracy"),
            "size_mb": record["bytes"] / 1e6,
            "pytorch_size_mb": bench["engines"][BASELINE_ENGINE]["bytes"] / 1e6,
        }
    servers = (load or {}).get("servers", {})
    bento = servers.get("bento", {}).get("results", {}).get("32")
    baseline = servers.get("baseline", {}).get("results", {}).get("32")
    if bento:
        result |= {
            "http_rps_32_users": bento["rps"],
            "http_p99_ms_32_users": bento["p99_ms"],
            "http_errors_32_users": bento["failures"],
        }
    if bento and baseline:
        result |= {
            "http_rps_ratio_32_users": _ratio(bento["rps"], baseline["rps"]),
            "baseline_rps_32_users": baseline["rps"],
            "baseline_p99_ms_32_users": baseline["p99_ms"],
        }
    result["targets"] = {
        key: {
            "target": target,
            "value": result.get(key),
            "met": result.get(key) is not None and result[key] >= target,
        }
        for key, target in TARGETS.items()
    }
    if "http_errors_32_users" in result:
        result["targets"]["http_errors_32_users"] = {
            "target": 0,
            "value": result["http_errors_32_users"],
            "met": result["http_errors_32_users"] == 0,
        }
    return result


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def run(cfg: Config, run_dir: Path, *, out_dir: Path | None = None) -> Path:
    """Write results.json, report.md and the plots under `reports/<run>/` from bench.json (+ load.json)."""
    out_dir = out_dir or cfg.reports_root / cfg.run
    bench = _read(out_dir / BENCH_JSON)
    if bench is None or not bench.get("ran"):
        raise ArtifactError(f"{out_dir / BENCH_JSON}: no engine results; run `textclf bench` first")
    load = _read(out_dir / LOAD_JSON)
    gpu = _read(out_dir / "bench-cuda.json")
    figures = {
        "latency_vs_batch.png": plots.latency_curves(
            bench["rows"], "batch", "seq_len", 128, out_dir / "latency_vs_batch.png"
        ),
        "latency_vs_seq.png": plots.latency_curves(
            bench["rows"], "seq_len", "batch", 1, out_dir / "latency_vs_seq.png"
        ),
        "speedup.png": plots.speedup_bars(speedups(bench), out_dir / "speedup.png"),
        "http.png": plots.http_panels((load or {}).get("servers", {}), out_dir / "http.png"),
    }
    results = {
        "created_at": now_iso(),
        "run": cfg.run,
        "headline": headline(bench, load),
        "machine": bench["machine"],
        "versions": bench["versions"],
        "engines": bench["engines"],
        "speedups": speedups(bench),
        "roofline": bench["roofline"],
        "rows": bench["rows"],
        "http": load,
        "gpu": gpu if gpu else {"ran": False, "reason": "`textclf bench --device cuda` was not run for this report"},
        "plots": [name for name, made in figures.items() if made],
    }
    atomic_write_text(out_dir / RESULTS_JSON, json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / REPORT_MD, render(results))
    logger.info("wrote %s", out_dir / REPORT_MD)
    return out_dir / REPORT_MD
