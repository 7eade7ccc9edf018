"""report.md sections on HTTP: the short-text phases of every server, the long-text phase, and the soak."""

from __future__ import annotations

from textclf_benchmarks.markdown_cells import fmt as _fmt
from textclf_benchmarks.markdown_cells import table as _table
from textclf_benchmarks.schema import LONG_SUFFIX, LoadPhase, Results, Soak

SOAK_HINT = "`textclf load --set bench.soak_minutes=10` (the configured Bento alone; the other phases run first)"


def _cpu_ms(phase: LoadPhase) -> str:
    return _fmt(None if phase.cpu_s_per_request is None else phase.cpu_s_per_request * 1000, ".2f")


def http(results: Results) -> list[str]:
    """Every server through the short-text phases, then the long-text phase and the soak."""
    load = results.http
    if load is None:
        return ["## HTTP load", "", "Not run for this report (`textclf load`).", ""]
    rows = []
    whats = []
    for name, server in load.servers.items():
        whats.append(f"- `{name}`: {server.what}")
        if not server.ran:
            rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", f"not run: {(server.reason or '')[:300]}"])
            continue
        for phase, s in server.results.items():
            if phase.endswith(LONG_SUFFIX):
                continue
            rows.append(
                [
                    name,
                    phase,
                    _fmt(s.rps, ".1f"),
                    _fmt(s.p50_ms, ".1f"),
                    _fmt(s.p95_ms, ".0f"),
                    _fmt(s.p99_ms, ".0f"),
                    f"{s.failures} / {s.requests}",
                    _cpu_ms(s),
                    _fmt(s.engine_busy, ".2f"),
                    "ran",
                ]
            )
    header = ["server", "phase (users)", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed / total"]
    header += ["server CPU ms / request", "engine busy", "status"]
    intro = (
        f"{load.request}; {load.pinning}. Phase `1-after-N` is one user right after the N-user burst. "
        "Latency percentiles come from every request's exact time; server CPU is the whole process tree's; "
        "engine busy = engine seconds (the service's histogram) ÷ wall seconds × workers."
    )
    lines = ["## HTTP load", "", intro, ""] + _table(header, rows) + ["", *whats, ""]
    return lines + long_texts(results) + soak(results)


def long_texts(results: Results) -> list[str]:
    """The long-text phase: the excerpts, where each server cuts them, and each server's figures."""
    load = results.http
    assert load is not None
    lines = ["### Long texts", ""]
    record = load.long_texts
    if record is None:
        return [*lines, "Not part of this run (`bench.load_long_users`; load.json from before the phase).", ""]
    if not record.ran:
        return [*lines, f"Not run: {record.reason}.", ""]
    ran = {name: found for name, server in load.servers.items() if (found := server.long_phase()) is not None}
    bento = ran.get("bento")
    lines += [
        f"{record.texts} {record.source}: {record.min_tokens}–{record.max_tokens} tokens by the model's tokenizer "
        f"([CLS] and [SEP] included), {_fmt(record.mean_tokens, '.0f')} on average ({_fmt(record.mean_words, '.0f')} "
        f"words). One excerpt per request, closed loop, after each server's short-text phases and "
        f"a short warm-up on the excerpts. Every server cuts each text at **{record.max_seq_len} tokens** "
        f"(the export's max_seq_len; {record.truncated} of the {record.texts} excerpts are longer), so none reads less "
        "than another:",
        "",
    ]
    lines += [f"- `{name}`: {server.truncation}" for name, server in load.servers.items() if server.truncation]
    rows = []
    for name, (phase_name, s) in ran.items():
        ratio = _fmt(bento[1].rps / s.rps if bento and s.rps else None, ".2f", "×")
        rows.append(
            [
                name,
                phase_name,
                _fmt(s.rps, ".1f"),
                _fmt(s.p50_ms, ".0f"),
                _fmt(s.p95_ms, ".0f"),
                _fmt(s.p99_ms, ".0f"),
                f"{s.failures} / {s.requests}",
                _cpu_ms(s),
                ratio,
            ]
        )
    header = ["server", "phase (users)", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed / total"]
    header += ["server CPU ms / request", "Bento req/s ÷ this"]
    if not rows:
        return [*lines, "", "No server ran the phase.", ""]
    return [*lines, "", *_table(header, rows), ""]


def soak(results: Results) -> list[str]:
    """The soak: requests and failures over the whole run, and each worker's memory after the first minute."""
    load = results.http
    record: Soak | None = load.soak if load else None
    lines = ["## Soak", ""]
    if record is None:
        return [*lines, f"Not run for this report: {SOAK_HINT}.", ""]
    if not record.ran or record.phase is None:
        return [*lines, f"Not run: {record.reason}.", ""]
    p = record.phase
    settled = next((s.t_s for s in record.samples if s.t_s >= record.settle_s), None)
    lines += [
        f"`{record.server}` ({record.what}) alone, {record.users} closed-loop users for {record.minutes:g} min, one "
        f"test-split text per request: {p.requests} requests, **{p.failures} failed**, {p.rps:.1f} req/s, p50 "
        f"{p.p50_ms:.1f} ms, p99 {p.p99_ms:.0f} ms. Each BentoML worker's RSS was read every "
        f"{record.sample_interval_s:g} s ({len(record.samples)} samples, the workers' PIDs re-read each time); growth "
        f"runs from the sample at {_fmt(settled, '.0f')} s (after the first {record.settle_s:g} s) to the last one. "
        f"Largest growth: **{_fmt(record.rss_growth_pct, '.2f', ' %')}**; workers restarted: "
        f"{_fmt(record.worker_restarts, 'd')}.",
        "",
    ]
    rows = [
        [str(w.pid), _fmt(w.rss_mb_settled, ".1f"), _fmt(w.rss_mb_end, ".1f"), _fmt(w.growth_pct, "+.2f", " %")]
        for w in record.workers
    ]
    header = ["worker PID", f"RSS at {_fmt(settled, '.0f')} s MiB", "RSS at the end MiB", "growth"]
    lines += _table(header, rows) + [""]
    for change in record.pid_changes:
        lines.append(f"- at {change.t_s:.0f} s: started {change.started or 'none'}, gone {change.gone or 'none'}")
    return lines + ([""] if record.pid_changes else [])


def bulk(results: Results) -> list[str]:
    """Bulk prediction locally and on Ray Data, from `textclf bench-bulk`."""
    report = results.bulk
    lines = ["## Bulk prediction (local and Ray Data)", ""]
    if report is None:
        return [*lines, "Not run for this report (`textclf bench-bulk`).", ""]
    local = report.runs.get("local")
    if local is not None and local.load_seconds is not None:
        timing = (
            "Both count loading the model: Ray's seconds include starting the actors and loading it in each (not "
            f"starting the cluster), the local path's loading it once ({local.load_seconds:.1f} s)."
        )
    else:  # bulk.json from before load_seconds: the local seconds were the summary line's
        timing = "Ray's times include starting the actors and loading the model in each; the local path's exclude it."
    warmups = [run.warmup_seconds for run in report.runs.values() if run.warmup_seconds is not None]
    standing = (
        " Each `ray start` cluster is timed on its second job, as a standing cluster runs every job after its first: "
        "an untimed short job first creates Ray Data's detached helper actors, which the cluster keeps "
        f"({', '.join(f'{s:.1f}' for s in warmups)} s)."
        if warmups
        else ""
    )
    lines += [
        f"`textclf bench-bulk`, {report.created_at}: one JSONL file of {report.rows:,} test-split texts (repeated), "
        f"written as JSONL. {timing} Nodes are `ray start` processes on this machine (loopback).{standing}",
        "",
    ]
    rows = [
        [
            name,
            run.engine,
            str(run.nodes),
            f"{run.actors} × {run.cpus_per_actor}",
            f"{run.seconds:.1f}",
            f"{run.texts_per_s:,.0f}",
            _fmt(run.peak_actor_rss_mb, ".0f"),
        ]
        for name, run in report.runs.items()
    ]
    lines += _table(["run", "engine", "nodes", "actors × CPUs", "s", "texts/s", "peak actor RSS MiB"], rows)
    lines += [
        "",
        f"Ray 1 × 2 CPUs ÷ local: **{_fmt(report.bulk_ray_vs_local, '.2f', '×')}**; 2 nodes × 1 CPU ÷ 1 node × 1 CPU: "
        f"**{_fmt(report.bulk_ray_scaling_2_nodes, '.2f', '×')}** (a scaling proxy: both nodes share this "
        "machine's cores, disk and the driver).",
        "",
    ]
    return lines
