"""report.md sections on the engine choice: what the service runs, the envelope against the fastest engine per case,
export's route and its shape timings, the long-text cases, and where each profiled engine's time goes."""

from __future__ import annotations

from textclf_benchmarks.markdown_cells import fmt as _fmt
from textclf_benchmarks.markdown_cells import table as _table
from textclf_benchmarks.schema import SERVED_ENGINE, OpProfile, Results

OP_ROWS = 10  # op types listed per engine; the rest are summed as "other"
PROFILERS = {
    "onnxruntime": (
        "ONNX Runtime's profiler",
        "op types are those of the graph ORT runs after its fusions",
    ),
    "openvino": (
        "OpenVINO's per-node counters (`PERF_COUNT`, the CPU plugin's own)",
        "node types are those the CPU plugin runs after its own fusions (`FullyConnected…`: the projection and "
        "feed-forward GEMMs, int8 ones included; `Subgraph`: fused element-wise chains)",
    ),
}


def served_note(results: Results) -> list[str]:
    """What `served` is, under the engine table (only where export recorded a route)."""
    served = results.engines.get(SERVED_ENGINE)
    if served is None:
        return []
    return [
        f"`{SERVED_ENGINE}` is what the service runs (`Classifier.from_run` with the manifest's route): "
        f"`{served.variant}` for calls up to {served.max_short_tokens} padded tokens (texts × longest text)"
        + (f" or up to {served.max_short_length} tokens a text" if served.max_short_length else "")
        + f", `{served.long_variant}` for longer ones. Its size is both variants'; its accuracy the lower of the two.",
        "",
    ]


def long_texts(results: Results) -> list[str]:
    """The long-text cases: what the texts are, how they were cut, and every engine's p50."""
    record = results.long_texts
    lines = ["## Real long texts", ""]
    if record is None or not record.ran:
        reason = record.reason if record is not None else "not part of this sweep (an older bench.json)"
        return [*lines, f"Not run: {reason}.", ""]
    lines += [
        f"{record.texts} political convention speeches ({record.source}), {record.mean_words:.0f} words on average, "
        f"cut at {record.max_seq_len} tokens by every engine ({record.truncated} of them longer than that; "
        f"{record.mean_tokens:.0f} tokens on average after the cut). `long-b1`: one speech per call; `long-b8`: 8 per "
        "call in the file's order. Modes as for the test-set texts.",
        "",
    ]
    speedups = results.speedups
    rows = [
        [
            r.case,
            r.mode,
            r.engine,
            _fmt(r.p50_ms),
            _fmt(r.p99_ms),
            _fmt(r.seq_per_s, ".1f"),
            _fmt(speedups.get(r.engine, {}).get(r.case) if r.mode == "serving" else None, ".2f", "×"),
        ]
        for r in results.rows
        if r.case.startswith("long-")
    ]
    return lines + _table(["case", "mode", "engine", "p50 ms", "p99 ms", "seq/s", "vs PyTorch"], rows) + [""]


def envelope(results: Results) -> list[str]:
    """The served engine against the fastest engine of each case, then export's route and its timings."""
    h = results.headline
    lines = ["## Engine envelope: what the service runs against the fastest engine", ""]
    if not results.envelope:
        lines += ["Not measured: this sweep has no rows of the engine the service runs.", ""]
    else:
        steady = all(c.statistic == "round_best" for c in results.envelope)
        statistic = "round-best time (the lowest of the 10 interleaved rounds' medians)" if steady else "p50"
        lines += [
            f"`engine_envelope_min` = **{_fmt(h.engine_envelope_min, '.3f')}** at {h.engine_envelope_case}: over every "
            f"case of the sweep, the fastest passing exported engine's {statistic} (PyTorch and the one-thread row "
            f"left out) ÷ that of `{h.served_engine}`, what the service runs. 1.0 = the service always runs the "
            "fastest engine measured for that call; above 1.0 it beat them all (run-to-run noise). Where the served "
            "pair ran every call of a case on one engine (`ran on`, counted by its router), that engine's own row is "
            "what the service runs for the case; the pair's own time is beside it (`pair's ratio`; worst "
            f"{_fmt(h.engine_envelope_min_measured, '.3f')}): two blocks of the same calls on the same engine, apart "
            "by the host's noise."
            + (f" By p50 over all calls the worst case is {_fmt(h.engine_envelope_min_p50, '.3f')}." if steady else ""),
            "",
        ]
        rows = [
            [
                c.case,
                c.mode,
                c.best_engine,
                _fmt(c.best_ms),
                _fmt(c.served_ms),
                _fmt(c.ratio, ".3f"),
                _fmt(c.p50_ratio, ".3f"),
                c.served_by or "both",
                _fmt(c.measured_ratio, ".3f"),
            ]
            for c in results.envelope
        ]
        unit = "round-best ms" if steady else "p50 ms"
        header = [
            "case",
            "mode",
            "best engine",
            f"its {unit}",
            f"served {unit}",
            "ratio",
            "ratio by p50",
            "ran on",
            "pair's ratio",
        ]
        lines += _table(header, rows) + [""]
    return lines + _route(results)


def _route(results: Results) -> list[str]:
    route, timings = results.serving_route, results.shape_timings
    if route is None and not timings:
        return ["Export recorded no shape timings (no route was considered).", ""]
    served = results.engines.get(results.headline.served_engine or SERVED_ENGINE)
    serving = served.variant if served else None
    # Exports since real-text cases time cases (shapes and real texts); earlier ones timed shapes, p50 per call.
    has_cases = any(t.case for t in timings)
    unit = "case" if has_cases else "shape"
    if route is None:
        lines = [
            f"Export's route: none. Its shape timings found no variant that lifts the serving one's worst {unit} "
            "enough, so one variant serves every call.",
            "",
        ]
    else:
        per_call = "ms per call" if has_cases else "p50 ms per call"
        source = f"export's own timings below (engine alone, {per_call})" if timings else "export's timings"
        lines = [
            f"Export's route: calls over **{route.max_short_tokens}** padded tokens"
            + (f" and **{route.max_short_length}** tokens a text" if route.max_short_length else "")
            + f" run on `{route.variant}`"
            + (f" instead of `{serving}`" if serving else "")
            + f". Chosen from {source}: with the route the worst "
            f"{unit} is {route.envelope_min:.3f} of the fastest variant, without it {route.envelope_min_unrouted:.3f}.",
            "",
        ]
    if not timings:  # a manifest that records the route without the timings it came from
        return [*lines, "The manifest holds no shape timings for it.", ""]
    variants = list(timings[0].ms)
    rows = []
    for t in timings:
        tokens = t.batch * t.seq_len
        runs = route.variant if route is not None and route.goes_long(t.batch, t.seq_len) else serving
        fastest = min(t.ms, key=t.ms.__getitem__)
        cells = [f"**{_fmt(t.ms.get(v))}**" if v == fastest else _fmt(t.ms.get(v)) for v in variants]
        case = [t.case or "", str(t.calls or 1)] if has_cases else []
        row = [*case, str(t.batch), str(t.seq_len), str(tokens), *cells]
        rows.append([*row, f"`{runs}`" if runs else "serving variant"])
    headers = [*(["case", "calls"] if has_cases else []), "batch", "seq_len", "padded tokens", *variants, "served by"]
    return lines + _table(headers, rows) + ["", "Bold: the fastest variant at that shape.", ""] + _plans(results)


def _plans(results: Results) -> list[str]:
    """Export's leading plans, timed again as served: predicted against measured worst case."""
    if not results.plans:
        return []
    lines = [
        "Export then timed its leading plans as served (the routed pair over the very engines timed alone, "
        "interleaved with them, median over rounds) and chose by the measured worst case:",
        "",
    ]
    best = max(results.plans, key=lambda p: p.measured_envelope)
    rows = [
        [f"`{p.label}`", _fmt(p.modeled_envelope, ".3f"), _fmt(p.measured_envelope, ".3f"), "best" if p is best else ""]
        for p in results.plans
    ]
    return lines + _table(["plan", "predicted worst case", "measured worst case", ""], rows) + [""]


def op_profiles(results: Results) -> list[str]:
    """One table per engine's profiler: node time per op type for each profiled variant."""
    profiles = results.op_profiles
    if not profiles:
        return []
    roofline = results.roofline.case
    lines = [
        "## Where the time goes",
        "",
        f"Each engine's own profiler at b{roofline.batch} s{roofline.seq_len}, node time per op type (share, ms per "
        "run), for fp32, the variants the service runs and OpenVINO's int8.",
        "",
    ]
    for kind, (profiler, note) in PROFILERS.items():
        chosen = {name: p for name, p in profiles.items() if (p.engine or "onnxruntime") == kind}
        if chosen:
            lines += [f"{profiler}; {note}.", "", *_profile_table(chosen), ""]
    return lines


def _profile_table(profiles: dict[str, OpProfile]) -> list[str]:
    names = list(profiles)
    ranked: dict[str, float] = {}
    for profile in profiles.values():
        for op, share in profile.share.items():
            ranked[op] = max(ranked.get(op, 0.0), share)
    shown = sorted(ranked, key=lambda op: -ranked[op])[:OP_ROWS]
    rows = [[op] + [_share(profiles[n].share.get(op), profiles[n].node_ms_per_run) for n in names] for op in shown]
    other = [1 - sum(profiles[n].share.get(op, 0.0) for op in shown) for n in names]
    rows.append(["other"] + [_share(share, profiles[n].node_ms_per_run) for share, n in zip(other, names, strict=True)])
    rows.append(["total node time"] + [_fmt(profiles[n].node_ms_per_run, ".1f", " ms") for n in names])
    return _table(["op type", *names], rows)


def _share(share: float | None, total_ms: float) -> str:
    return "-" if not share else f"{share * 100:.1f} % ({share * total_ms:.1f} ms)"
