"""report.md: the headline table first, then every measured number behind it."""

from __future__ import annotations

from textclf.hardware import has_int8_dot_products
from textclf_benchmarks import markdown_engines, markdown_load
from textclf_benchmarks.markdown_cells import fmt as _fmt
from textclf_benchmarks.markdown_cells import table as _table
from textclf_benchmarks.schema import ONE_THREAD_SUFFIX, NotRun, Results

GPU_BASELINE_ENGINE = "pytorch-fp32-cuda"

TARGET_NAMES = {
    "speedup_b1_real": "speed-up over PyTorch, batch 1, real test texts",
    "speedup_b32_s128": "speed-up over PyTorch, batch 32 × 128 tokens",
    "gemm_fraction_b32_s128": "effective FLOP/s at b32 s128 ÷ measured fp32 GEMM FLOP/s",
    "http_rps_ratio_32_users": "HTTP req/s at 32 users, Bento ÷ baseline",
    "http_errors_32_users": "failed requests at 32 users (Bento)",
    "http_rps_ratio_vs_peer_32_users": "HTTP req/s at 32 users, Bento ÷ infinity-emb (optimum engine, same model file)",
    "http_p99_ratio_vs_peer_32_users": "HTTP p99 at 32 users, Bento ÷ infinity-emb (optimum engine)",
    "after_burst_p50_ratio": "p50 of 1 user right after the burst ÷ p50 of 1 fresh user (Bento)",
    "engine_busy_32_users": "fraction of wall time the Bento's engine runs at 32 users",
    "http_errors_max": "most failed requests in any phase (Bento, every worker layout)",
    "http_rps_ratio_v2_vs_predict_32_users": "HTTP req/s at 32 users, Open Inference Protocol v2 route ÷ /predict",
    "http_rps_ratio_hf_vs_predict_32_users": "HTTP req/s at 32 users, Hugging Face route (POST /) ÷ /predict",
    "engine_envelope_min": "engine envelope: worst sweep case of (fastest engine's time ÷ the served engine's)",
    "http_long_rps_ratio_vs_peer_32_users": "HTTP req/s, long texts at 32 users, Bento ÷ infinity-emb (optimum engine)",
    "http_long_errors": "failed requests in the long-text phase (Bento)",
    "soak_failures": "failed requests in the soak (Bento alone at 32 users)",
    "soak_rss_growth_pct": "worker RSS growth after the soak's first minute, % (largest worker)",
    "soak_worker_restarts": "workers restarted during the soak",
}


def _machine(results: Results) -> str:
    m = results.machine
    isa = ", ".join(flag for flag, present in m.isa.items() if present) or "none of the tracked flags"
    gpu = m.gpu or "no GPU"
    return f"{m.cpu_model} ({m.arch}), {m.cores} cores usable, ISA: {isa}; {gpu}; Python {m.python}"


def _measured(results: Results) -> str:
    """When each measurement behind the report was taken (the sweep, the HTTP load, bulk prediction)."""
    parts = [f"sweep {results.bench_created_at}"] if results.bench_created_at else []
    if results.http is not None:
        parts.append(f"HTTP load {results.http.created_at}")
    if results.bulk is not None:
        parts.append(f"bulk {results.bulk.created_at}")
    return ", ".join(parts) or results.created_at


def render(results: Results) -> str:
    h = results.headline
    lines = [
        f"# textclf benchmark report: run `{results.run}`",
        "",
        f"Measured {_measured(results)} on {_machine(results)}; report written {results.created_at}.",
        "",
        "Ratios come from one process run (engines interleaved) or one load-test session; absolute times "
        "depend on the machine.",
        "",
    ]
    lines += ["## At a glance", ""]
    lines += _table(
        [
            "best variant",
            "speed-up b1 (real texts)",
            "speed-up b32 s128",
            "accuracy Δ",
            "size",
            "HTTP req/s at 32 users vs baseline",
            "p99 at 32 users",
            "errors",
        ],
        [
            [
                h.best_variant or "n/a",
                _fmt(h.speedup_b1_real, ".2f", "×"),
                _fmt(h.speedup_b32_s128, ".2f", "×"),
                _fmt(None if h.accuracy_delta is None else h.accuracy_delta * 100, "+.2f", " pt"),
                f"{_fmt(h.size_mb, '.1f', ' MB')} (PyTorch {_fmt(h.pytorch_size_mb, '.1f', ' MB')})",
                f"{_fmt(h.http_rps_32_users, '.1f')} vs {_fmt(h.baseline_rps_32_users, '.1f')} "
                f"({_fmt(h.http_rps_ratio_32_users, '.2f', '×')})",
                _fmt(h.http_p99_ms_32_users, ".0f", " ms"),
                _fmt(h.http_errors_32_users, "d"),
            ]
        ],
    )
    lines += ["", "## Targets", ""]
    rows = []
    for key, target in h.targets.items():
        verdict = "met" if target.met else ("**missed**" if target.value is not None else "**not measured**")
        goal = ("≤ " if target.at_most else "≥ ") + _fmt(target.target, "g")
        rows.append([TARGET_NAMES.get(key, key), goal, _fmt(target.value, ".2f"), verdict])
    lines += _table(["target", "goal", "measured", "verdict"], rows)
    lines += ["", f"Engine targets: the row for a {h.engine_target_row or 'n/a'} applies. " + _limits_note(results), ""]
    lines += _engines(results) + _sweep(results) + _real(results) + markdown_engines.long_texts(results)
    lines += markdown_engines.envelope(results) + _roofline(results) + markdown_engines.op_profiles(results)
    lines += markdown_load.http(results) + markdown_load.bulk(results)
    lines += _gpu(results) + _versions(results)
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in results.plots] + [""]
    return "\n".join(lines)


def _limits_note(results: Results) -> str:
    m = results.machine
    if has_int8_dot_products(m.isa):
        return "This CPU has int8 dot-product instructions (VNNI/AMX): int8 variants can beat the fp32 GEMM ceiling."
    return (
        "This CPU has no VNNI/AMX int8 dot-product instructions (AVX2 only), where int8 GEMMs gain little over "
        "fp32; an effective rate above the fp32 GEMM ceiling needs them. With only "
        f"{m.cores} cores, the locust client also competes with the servers for CPU."
    )


def _engines(results: Results) -> list[str]:
    rows = []
    for name, e in results.engines.items():
        threads = str(e.threads) if e.threads is not None else "-"
        if not e.loaded:
            rows.append([name, e.kind, threads, "-", "-", "-", f"not run: {e.reason}"])
            continue
        size, accuracy, rss = _fmt(e.bytes / 1e6, ".1f"), _fmt(e.test_accuracy, ".4f"), _fmt(e.rss_load_mb, ".0f")
        rows.append([name, e.kind, threads, size, accuracy, rss, "ran"])
    headers = ["engine", "kind", "threads", "size MB", "test accuracy", "RSS at load MB", "status"]
    return (
        ["## Engines", ""]
        + _table(headers, rows)
        + [""]
        + markdown_engines.served_note(results)
        + _thread_scaling(results)
    )


def _thread_scaling(results: Results) -> list[str]:
    """The serving variant on one intra-op thread against the sweep's thread count, case by case."""
    single = [name for name, e in results.engines.items() if name.endswith(ONE_THREAD_SUFFIX) and e.loaded]
    if not single:
        return []
    one = single[0]
    full = one.removesuffix(ONE_THREAD_SUFFIX)
    full_threads = results.engines[full].threads if full in results.engines else None
    p50 = {(r.engine, r.case, r.mode): r.p50_ms for r in results.rows}
    rows = []
    for (engine, case, mode), ms in p50.items():
        if engine != one or (full, case, mode) not in p50:
            continue
        many = p50[(full, case, mode)]
        rows.append([case, mode, _fmt(many), _fmt(ms), _fmt(ms / many if many else None, ".2f", "×")])
    return (
        [
            f"`{one}` is `{full}` on 1 intra-op thread instead of {full_threads}: the engine each worker of a "
            "multi-worker Bento runs. p50 ms per call:",
            "",
        ]
        + _table(["case", "mode", f"{full_threads} threads", "1 thread", "1 thread ÷ many"], rows)
        + [""]
    )


def _sweep(results: Results) -> list[str]:
    speedups = results.speedups
    rows = []
    for r in results.rows:
        if r.seq_len is None:
            continue
        speedup = speedups.get(r.engine, {}).get(r.case)
        rows.append(
            [
                r.case,
                r.engine,
                _fmt(r.p50_ms),
                _fmt(r.p95_ms),
                _fmt(r.p99_ms),
                _fmt(r.seq_per_s, ".0f"),
                _fmt(speedup, ".2f", "×") if speedup else "1.00× (baseline)" if r.engine == "pytorch-fp32" else "n/a",
                str(r.iters),
            ]
        )
    header = ["case", "engine", "p50 ms", "p95 ms", "p99 ms", "seq/s", "vs PyTorch", "iters"]
    return ["## Sweep: fixed-length synthetic inputs, model alone", ""] + _table(header, rows) + [""]


def _real(results: Results) -> list[str]:
    speedups = results.speedups
    rows = []
    for r in results.rows:
        if not r.case.startswith("real-"):
            continue
        speedup = speedups.get(r.engine, {}).get(r.case) if r.mode == "serving" else None
        rows.append(
            [
                r.case,
                r.mode,
                r.engine,
                _fmt(r.p50_ms),
                _fmt(r.p99_ms),
                _fmt(r.seq_per_s, ".0f"),
                _fmt(speedup, ".2f", "×"),
            ]
        )
    note = (
        "`serving` = tokenize + pad + infer + softmax (for the exported engines, `textclf.inference.runtime`, "
        "the service's own "
        "path; for PyTorch, the HF tokenizer + model); `session` = the engine alone (ONNX Runtime session or OpenVINO "
        "compiled model) on pre-tokenized inputs. "
        "`real-b32` takes the texts in test-set order (mixed lengths, much padding); `real-b32-sorted` sorts them by "
        "token length first, as the service's batcher and `textclf predict` do."
    )
    header = ["case", "mode", "engine", "p50 ms", "p99 ms", "seq/s", "vs PyTorch"]
    return ["## Real test-set texts", "", note, ""] + _table(header, rows) + [""]


def _roofline(results: Results) -> list[str]:
    r = results.roofline
    h = results.headline
    return [
        "## Roofline",
        "",
        f"fp32 GEMM through onnxruntime ({r.gemm.size}² MatMul, {r.gemm.threads} threads): "
        f"{r.gemm.flops_per_s / 1e9:.1f} GFLOP/s. Model work at b{r.case.batch} "
        f"s{r.case.seq_len}: {r.model_flops / 1e9:.1f} GFLOP (GEMM FLOPs counted from the config). "
        f"Best variant achieves {_fmt(h.achieved_gflops_b32_s128, '.1f')} GFLOP/s = "
        f"{_fmt(h.gemm_fraction_b32_s128, '.2f')} of the GEMM rate.",
        "",
    ]


def _gpu(results: Results) -> list[str]:
    gpu = results.gpu
    if isinstance(gpu, NotRun) or not gpu.ran:
        return ["## GPU", "", f"Not measured: {gpu.reason}.", ""]
    eager = {(r.case, r.mode): r.p50_ms for r in gpu.rows if r.engine == GPU_BASELINE_ENGINE}
    rows = []
    for r in gpu.rows:
        base = eager.get((r.case, r.mode))
        ratio = _fmt(base / r.p50_ms, ".2f", "×") if base and r.p50_ms > 0 else "n/a"
        rows.append(
            [r.case, r.mode, r.engine, _fmt(r.p50_ms), _fmt(r.p99_ms), _fmt(r.seq_per_s, ".0f"), ratio, str(r.iters)]
        )
    m, versions = gpu.machine, gpu.versions
    stack = ", ".join(f"{name} {versions[name]}" for name in ("torch", "transformers") if name in versions)
    lines = [
        "## GPU",
        "",
        f"`textclf bench --device cuda`, measured {gpu.created_at} on {m.gpu} (host {m.cpu_model}, {m.cores} cores; "
        f"Python {m.python}; {stack}). Same sweep as above; ratios are p50s over {GPU_BASELINE_ENGINE} in the "
        "same run.",
        "",
    ]
    lines += _table(["case", "mode", "engine", "p50 ms", "p99 ms", "seq/s", f"vs {GPU_BASELINE_ENGINE}", "iters"], rows)
    not_run = [f"- {name}: {e.reason}" for name, e in gpu.engines.items() if not e.loaded]
    if not_run:
        lines += ["", "Not run:", ""] + not_run
    return lines + [""]


def _versions(results: Results) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(results.versions.items()))
    return ["## Versions", "", versions, ""]
