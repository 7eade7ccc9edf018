"""report.md: the headline table first, then every measured number behind it."""

from __future__ import annotations

from collections.abc import Callable

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.hardware import has_int8_dot_products
from textclf_benchmarks import markdown_load
from textclf_benchmarks.markdown_load import fmt, table
from textclf_benchmarks.schema import SERVED_AA_ENGINE, BenchRow, NotRun, Results

BASELINE_ENGINE, GPU_BASELINE_ENGINE = "pytorch-fp32", "pytorch-fp32-cuda"
NAMES = {  # each headline figure's name in the targets table
    "engine_envelope_geomean": "engine envelope: geometric mean over sweep cases of (fastest engine ÷ served engine)",
    "http_rps_ratio_vs_peer_32_users": "HTTP req/s at 32 users, Bento ÷ infinity-emb (optimum engine, same model file)",
    "http_long_rps_ratio_vs_peer_32_users": "HTTP req/s, long texts at 32 users, Bento ÷ infinity-emb (optimum engine)",
    "engine_busy_32_users": "fraction of wall time the Bento's engine runs at 32 users",
    "http_rps_ratio_v2_vs_predict_32_users": "HTTP req/s at 32 users, Open Inference Protocol v2 route ÷ /predict",
    "http_rps_ratio_hf_vs_predict_32_users": "HTTP req/s at 32 users, Hugging Face route (POST /) ÷ /predict",
    "bulk_ray_vs_local": "bulk texts/s, Ray 1 actor × 2 CPUs ÷ local",
    "bulk_ray_scaling_2_nodes": "bulk texts/s, 2 Ray nodes × 1 CPU ÷ 1 node (one-VM proxy)",
    "http_p99_ratio_vs_peer_32_users": "HTTP p99 at 32 users, Bento ÷ infinity-emb (optimum engine)",
    "after_burst_p50_ratio": "p50 of 1 user right after the burst ÷ p50 of 1 fresh user (Bento)",
    "http_errors_32_users": "failed requests at 32 users (Bento)",
    "http_errors_max": "most failed requests in any phase (Bento, every worker layout)",
    "http_long_errors": "failed requests in the long-text phase (Bento)",
    # Named here, not targets (`textclf_benchmarks.report` says why): reported beside them, never judged.
    "speedup_b1_real": "speed-up over PyTorch, batch 1, real test texts",
    "speedup_b32_s128": "speed-up over PyTorch, batch 32 × 128 tokens",
    "gemm_fraction_b32_s128": "effective FLOP/s at b32 s128 ÷ measured fp32 GEMM FLOP/s",
    "http_rps_ratio_32_users": "HTTP req/s at 32 users, Bento ÷ FastAPI + PyTorch baseline",
    "engine_envelope_min": "engine envelope: its worst case",
    "engine_aa_spread": "A/A spread: median over cases of abs(served ÷ served-aa − 1)",
    "drift_false_alarm_rate": "drift alarms on no drift: export's trials, reference and window drawn independently",
    "drift_false_alarm_rate_disjoint": "drift alarms on no drift: the same trials, reference and window disjoint",
    "drift_monitor_cpu_ratio_b1": "monitoring CPU per answered text ÷ the engine's time per text at b1",
}


def render(results: Results) -> str:
    h = results.headline
    m = results.machine
    isa = ", ".join(flag for flag, present in m.isa.items() if present) or "none of the tracked flags"
    measured = [f"sweep {results.bench_created_at}"] if results.bench_created_at else []
    measured += [f"HTTP load {results.http.created_at}"] if results.http else []
    measured += [f"bulk {results.bulk.created_at}"] if results.bulk else []
    measured += [f"explanations {results.explain.created_at}"] if results.explain else []
    measured += [f"drift {results.drift.created_at}"] if results.drift else []
    lines = [
        f"# textclf benchmark report: run `{results.run}`",
        "",
        f"Measured {', '.join(measured) or results.created_at} on {m.cpu_model} ({m.arch}), {m.cores} cores usable, "
        f"ISA: {isa}; {m.gpu or 'no GPU'}; Python {m.python}; report written {results.created_at}.",
        "",
        "Ratios come from one process run (engines interleaved) or one load-test session; absolute times "
        "depend on the machine.",
        "",
        "## At a glance",
        "",
    ]
    accuracy = None if h.accuracy_delta is None else h.accuracy_delta * 100
    glance = ["best variant", "speed-up b1 (real texts)", "speed-up b32 s128", "accuracy Δ", "size"]
    glance += ["HTTP req/s at 32 users", "p99 at 32 users", "errors"]
    size = f"{fmt(h.size_mb, '.1f', ' MB')} (PyTorch {fmt(h.pytorch_size_mb, '.1f', ' MB')})"
    http = f"{fmt(h.http_rps_32_users, '.1f')} (baseline {fmt(h.baseline_rps_32_users, '.1f')})"
    engine = [fmt(h.speedup_b1_real, ".2f", "×"), fmt(h.speedup_b32_s128, ".2f", "×"), fmt(accuracy, "+.2f", " pt")]
    errors = [fmt(h.http_p99_ms_32_users, ".0f", " ms"), fmt(h.http_errors_32_users, "d")]
    lines += table(glance, [[h.best_variant or "n/a", *engine, size, http, *errors]])
    lines += ["", "## Targets", ""]
    rows = []
    for key, target in h.targets.items():
        verdict = "met" if target.met else ("**missed**" if target.value is not None else "**not measured**")
        goal = ("≤ " if target.at_most else "≥ ") + fmt(target.target, "g")
        rows.append([NAMES.get(key, key), goal, fmt(target.value, ".2f"), verdict])
    rows += [
        [name, "reported", fmt(getattr(h, key), ".3f"), "-"] for key, name in NAMES.items() if key not in h.targets
    ]
    lines += table(["figure", "goal", "measured", "verdict"], rows)
    lines += ["", _limits_note(results), ""]
    lines += _engines(results) + _sweep_tables(results) + _envelope(results) + _roofline(results)
    lines += markdown_load.http(results) + markdown_load.bulk(results) + _gpu(results) + _confidence(results)
    lines += markdown_load.explain(results) + _drift(results)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(results.versions.items()))
    lines += ["## Versions", "", versions, "", "## Plots", ""] + [f"![{name}]({name})" for name in results.plots]
    return "\n".join([*lines, ""])


def _limits_note(results: Results) -> str:
    m = results.machine
    note = "Speed-ups over PyTorch track how fast PyTorch and fp32 GEMMs are on the CPU: reported, not targets."
    if has_int8_dot_products(m.isa):
        return f"{note} This CPU has int8 dot-product instructions (VNNI/AMX)."
    return f"{note} This CPU has no VNNI/AMX (AVX2 only): int8 GEMMs gain little over fp32 here."


def _drift(results: Results) -> list[str]:
    """The served drift monitor (`textclf bench-drift`) and export's checks of it; nothing where it was not run."""
    if (d := results.drift) is None:
        return []
    ref, cost, per = d.reference, d.cost, d.chunk_texts
    check = ref.false_alarms
    lines = ["## Drift", "", f"`textclf bench-drift`, {d.created_at}, on {d.machine.cpu_model}: {d.server}, window "]
    lines[-1] += f"{ref.window} texts; each stream after a full window of test texts, in requests of {d.request_texts}."
    if check is not None:
        lines += ["", f"Export's check on `{d.variant}`'s pooled validation + test answers ({check.pool_texts}), "
                  f"{check.trials} trials of a reference of {check.reference_texts} and a window of {check.window}: "
                  f"false-alarm rate **{fmt(check.alarm_rate, '.3f')}** drawn independently (they share answers), "
                  f"{fmt(check.disjoint_alarm_rate, '.3f')} drawn disjoint (the level the alarm keeps; the family-wise "
                  f"goal {ref.level:g}). Estimated accuracy (mean confidence on test) "
                  f"{fmt(ref.estimated_accuracy, '.4f')}, measured {fmt(ref.test_accuracy, '.4f')}."]  # fmt: skip
    rows = [
        [s.name, s.source, str(s.texts), "yes" if s.alarm_before else "no", fmt(s.alarm_after_texts, "d"),
         ", ".join(f"{k} ({v})" for k, v in s.fired_after_texts.items()) or "none",
         ", ".join(f"{k} {fmt(v, '.2f')}" for k, v in s.scores.items()),
         " / ".join(fmt(v, ".3f") for v in s.estimated_accuracy),
         " / ".join(fmt(v, ".3f") for v in s.measured_accuracy) if s.measured_accuracy else "-"]
        for s in d.streams
    ]  # fmt: skip
    head = ["stream", "texts of", "texts", "alarm before", "alarm after (texts)", "fired (after texts)", "end scores"]
    lines += ["", *table([*head, f"estimated accuracy per {per}", f"measured per {per}"], rows), ""]
    lines.append(
        f"Cost, in one process set up as a worker: `Monitoring.observe` {cost.observe_us:.1f} µs a text (thread CPU), "
        f"writing the collected rows {cost.background_us:.1f} µs a text, one drift evaluation {cost.evaluation_ms:.2f} "
        f"ms a second; the engine {cost.engine_ms:.2f} ms a text at b1 (median, {cost.texts} test texts): "
        f"`drift_monitor_cpu_ratio_b1` = **{cost.ratio:.4f}**."
    )
    return [*lines, ""]


def _engines(results: Results) -> list[str]:
    rows = []
    for name, e in results.engines.items():
        threads = str(e.threads) if e.threads is not None else "-"
        if not e.loaded:
            rows.append([name, e.kind, threads, "-", "-", "-", f"not run: {e.reason}"])
            continue
        size, accuracy, rss = fmt(e.bytes / 1e6, ".1f"), fmt(e.test_accuracy, ".4f"), fmt(e.rss_load_mb, ".0f")
        rows.append([name, e.kind, threads, size, accuracy, rss, e.runs or "ran"])
    headers = ["engine", "kind", "threads", "size MB", "test accuracy", "RSS at load MB", "runs"]
    return ["## Engines", "", *table(headers, rows), ""]


def _rows(rows: list[BenchRow], sweep: list[BenchRow], baseline: str, name: str) -> list[str]:
    """One table of sweep rows: the times per engine and case, and each row's p50 speed-up over the `baseline`
    engine's row of the same case and mode in `sweep` (none where it has none: PyTorch's real-text cost is its whole
    path only)."""
    base = {(r.case, r.mode): r.p50_ms for r in sweep if r.engine == baseline}

    def speedup(r: BenchRow) -> float | None:
        value = base.get((r.case, r.mode))
        return value / r.p50_ms if value and r.p50_ms > 0 else None

    header = ["case", "mode", "engine", "round median ms", "p50 ms", "p99 ms", "seq/s", f"vs {name}", "iters"]
    cells = [
        [r.case, r.mode, r.engine, fmt(r.round_median_ms), fmt(r.p50_ms), fmt(r.p99_ms), fmt(r.seq_per_s, ".1f")]
        + [fmt(speedup(r), ".2f", "×"), str(r.iters)]
        for r in rows
    ]
    return [*table(header, cells), ""]


def _cpu_rows(results: Results, title: str, note: str, keep: Callable[[BenchRow], bool]) -> list[str]:
    rows = [r for r in results.rows if keep(r) and not (r.mode == "session" and r.engine == BASELINE_ENGINE)]
    return [f"## {title}", "", note, "", *_rows(rows, results.rows, BASELINE_ENGINE, "PyTorch")]


def _sweep_tables(results: Results) -> list[str]:
    modes = (
        "`session` = the engine alone (ONNX Runtime session or OpenVINO compiled model) on prepared inputs; `serving` "
        "= tokenize + pad + infer + softmax (`textclf.inference.runtime`, the service's own path; for PyTorch, the HF "
        "tokenizer + model). `served` is what the service runs (`Classifier.from_run`); `served-aa` is it loaded "
        "again (the A/A control); `-1thread` is the serving variant on one thread, a multi-worker Bento's worker."
    )
    lines = _cpu_rows(results, "Sweep: fixed-length synthetic inputs", modes, lambda r: r.seq_len is not None)
    real = (
        "`real-b32` takes the texts in test-set order (mixed lengths, much padding); `real-b32-sorted` sorts them by "
        "token length first, as the service's batcher and `textclf predict` do."
    )
    lines += _cpu_rows(results, "Real test-set texts", real, lambda r: r.case.startswith("real-"))
    record = results.long_texts
    if record is None or not record.ran:
        reason = record.reason if record is not None else "not part of this sweep (an older bench.json)"
        return [*lines, "## Real long texts", "", f"Not run: {reason}.", ""]
    long = (
        f"{record.texts} political convention speeches ({record.source}), {fmt(record.mean_words, '.0f')} words on "
        f"average, cut at {record.max_seq_len} tokens by every engine ({record.truncated} of them longer than that; "
        f"{fmt(record.mean_tokens, '.0f')} tokens on average after the cut). `long-b1`: one speech per call; "
        "`long-b8`: 8 per call in the file's order."
    )
    return lines + _cpu_rows(results, "Real long texts", long, lambda r: r.case.startswith("long-"))


def _envelope(results: Results) -> list[str]:
    h, cases = results.headline, results.envelope
    lines = ["## Engine envelope: what the service runs against the fastest engine", ""]
    if not cases:
        return [*lines, "Not measured: this sweep has no rows of the engine the service runs.", ""]
    has_aa = any(c.aa_ratio is not None for c in cases)
    statistic = (
        "round median (the median over the interleaved rounds of each round's median)"
        if results.rows[0].round_median_ms is not None
        else "p50 (this sweep predates round medians)"
    )
    aa = (
        f"A/A control: `{h.served_engine}` is loaded twice (`{SERVED_AA_ENGINE}`, a second `Classifier.from_run`) "
        f"and timed as two engines; `engine_aa_spread` = **{fmt(h.engine_aa_spread, '.3f')}** (the median over the "
        f"cases of |{h.served_engine} ÷ {SERVED_AA_ENGINE} − 1|) is this run's noise floor: a ratio within it of 1.0 "
        "is the host's noise, not a choice."
        if has_aa
        else "This sweep predates the A/A control (no second load of the served engine): its noise floor is unknown."
    )
    goal = h.targets["engine_envelope_geomean"].target if "engine_envelope_geomean" in h.targets else None
    lines += [
        f"Per case, the fastest passing exported engine's {statistic} ÷ that of `{h.served_engine}`, what the service "
        "runs (PyTorch, the one-thread row and the served entries are not candidates). 1.0 = the service "
        "runs the fastest engine measured for that call; above 1.0 it beat them all (noise). `engine_envelope_geomean`"
        f" = **{fmt(h.engine_envelope_geomean, '.3f')}** over {len(cases)} cases (target ≥ "
        f"{fmt(goal, 'g')}); `engine_envelope_min` = **{fmt(h.engine_envelope_min, '.3f')}** at "
        f"{h.engine_envelope_case} (reported). {aa}",
        "",
    ]
    rows = [
        [c.case, c.mode, c.best_engine, fmt(c.best_ms), fmt(c.served_ms), fmt(c.ratio, ".3f"), fmt(c.aa_ratio, ".3f")]
        for c in cases
    ]
    header = ["case", "mode", "best engine", "its ms", "served ms", "ratio", f"served ÷ {SERVED_AA_ENGINE}"]
    return lines + table(header, rows) + [""]


def _roofline(results: Results) -> list[str]:
    r, h = results.roofline, results.headline
    return [
        "## Roofline",
        "",
        f"fp32 GEMM through onnxruntime ({r.gemm.size}² MatMul, {r.gemm.threads} threads): "
        f"{r.gemm.flops_per_s / 1e9:.1f} GFLOP/s. Model work at b{r.case.batch} s{r.case.seq_len}: "
        f"{r.model_flops / 1e9:.1f} GFLOP (GEMM FLOPs counted from the config). Best variant achieves "
        f"{fmt(h.achieved_gflops_b32_s128, '.1f')} GFLOP/s = {fmt(h.gemm_fraction_b32_s128, '.2f')} of the GEMM rate.",
        "",
    ]


def _confidence(results: Results) -> list[str]:
    """The serving variant's calibration on the test split, and its selective answers at target accuracy 0.95."""
    h, record = results.headline, results.confidence
    if not isinstance(record, ConfidenceRecord) or record.test is None:
        return ["## Confidence", "", f"Not measured: {record.reason if record else 'this report predates it'}.", ""]
    t = record.test
    metrics = [
        ("ECE", t.ece_before, t.ece_after, t.ece_delta_ci95),
        ("NLL", t.nll_before, t.nll_after, t.nll_delta_ci95),
        ("Brier", t.brier_before, t.brier_after, t.brier_delta_ci95),
    ]
    rows = [[m, f"{b:.4f}", f"{a:.4f}", f"{a - b:+.4f}", f"[{i.low:+.4f}, {i.high:+.4f}]"] for m, b, a, i in metrics]
    selective = "no validation threshold reaches it"
    if (bound := h.selective_accuracy_bound_at_0_95) is not None:
        selective = (
            f"threshold {h.selective_threshold_at_0_95:.4f} (validation); on test it answers "
            f"{h.selective_coverage_at_0_95:.1%} of the texts, accuracy {h.selective_accuracy_at_0_95:.4f} against "
            f"the bound 0.95 − 2·√(0.95·0.05 / n answered) = {bound:.4f}"
        )
    return [
        "## Confidence",
        "",
        f"`{results.confidence_variant}`, temperature {record.temperature} fitted on {record.validation_texts} "
        f"validation texts; {t.texts} test texts, {t.ece_bins} ECE bins, after − before with its 95 % paired-bootstrap "
        f"interval ({t.bootstrap_resamples} resamples).",
        "",
        *table(["metric", "raw scores", "calibrated", "after − before", "95 % interval"], rows),
        "",
        f"`serve.target_accuracy=0.95`: {selective}.",
        "",
    ]


def _gpu(results: Results) -> list[str]:
    gpu = results.gpu
    if isinstance(gpu, NotRun) or not gpu.ran:
        return ["## GPU", "", f"Not measured: {gpu.reason}.", ""]
    m, versions = gpu.machine, gpu.versions
    stack = ", ".join(f"{name} {versions[name]}" for name in ("torch", "transformers") if name in versions)
    not_run = [f"- {name}: {e.reason}" for name, e in gpu.engines.items() if not e.loaded]
    return [
        "## GPU",
        "",
        f"`textclf bench --device cuda`, measured {gpu.created_at} on {m.gpu} (host {m.cpu_model}, {m.cores} cores; "
        f"Python {m.python}; {stack}). Same sweep as above; ratios are p50s over {GPU_BASELINE_ENGINE} in the "
        "same run.",
        "",
        *_rows(gpu.rows, gpu.rows, GPU_BASELINE_ENGINE, GPU_BASELINE_ENGINE),
        *(["Not run:", "", *not_run, ""] if not_run else []),
    ]
