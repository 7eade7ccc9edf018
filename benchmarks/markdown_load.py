"""report.md's cells and tables, and its sections on HTTP (every server's short-text phases, the long-text phase),
bulk prediction and explanations."""

from __future__ import annotations

from typing import Any

from textclf_benchmarks.schema import LONG_SUFFIX, LoadPhase, Results


def fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    """A value with its unit, or n/a: the cell every report.md table is made of."""
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


PHASE_HEADER = ["server", "phase (users)", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed / total"]
PHASE_HEADER.append("server CPU ms / req")


def _phase(server: str, name: str, s: LoadPhase) -> list[str]:
    cpu_ms = None if s.cpu_s_per_request is None else s.cpu_s_per_request * 1000
    figures = [fmt(s.rps, ".1f"), fmt(s.p50_ms, ".1f"), fmt(s.p95_ms, ".0f"), fmt(s.p99_ms, ".0f")]
    return [server, name, *figures, f"{s.failures} / {s.requests}", fmt(cpu_ms, ".2f")]


def http(results: Results) -> list[str]:
    """Every server through the short-text phases, then the long-text phase."""
    load = results.http
    if load is None:
        return ["## HTTP load", "", "Not run for this report (`textclf load`).", ""]
    rows, whats = [], []
    for name, server in load.servers.items():
        runs = server.model or {}  # a Bento's own `GET /model`: the variant and engine it runs
        engine = runs.get("engine") or ", ".join(runs.get("providers") or [])
        said = f"; its `GET /model`: `{runs.get('variant')}` on {engine}" if runs else ""
        whats.append(f"- `{name}`: {server.what}{said}")
        if not server.ran:
            rows.append([name, *["-"] * 8, f"not run: {(server.reason or '')[:300]}"])
        rows += [
            [*_phase(name, phase, s), fmt(s.engine_busy, ".2f"), "ran"]
            for phase, s in server.results.items()
            if not phase.endswith(LONG_SUFFIX)
        ]
    intro = (
        f"{load.request}; {load.pinning}. Phase `1-after-N` is one user right after the N-user burst. Requests, "
        "failures and req/s are locust's own (`--csv`); latency percentiles come from every request's exact time "
        "(locust's CSV rounds them to whole milliseconds, too coarse for a few-ms p50); server CPU is the whole "
        "process tree's; engine busy = engine seconds (the service's histogram) ÷ wall seconds × workers."
    )
    lines = ["## HTTP load", "", intro, "", *table([*PHASE_HEADER, "engine busy", "status"], rows), "", *whats, ""]
    return lines + _long_texts(results)


def _long_texts(results: Results) -> list[str]:
    """The long-text phase: the excerpts, where each server cuts them, and each server's figures."""
    load = results.http
    record = load.long_texts if load else None
    lines = ["### Long texts", ""]
    if load is None or record is None:
        return [*lines, "Not part of this run (`bench.load_long_users`; load.json from before the phase).", ""]
    if not record.ran:
        return [*lines, f"Not run: {record.reason}.", ""]
    ran = {name: found for name, server in load.servers.items() if (found := server.long_phase()) is not None}
    lines += [
        f"{record.texts} {record.source}: {record.min_tokens}–{record.max_tokens} tokens by the model's tokenizer "
        f"([CLS] and [SEP] included), {fmt(record.mean_tokens, '.0f')} on average ({fmt(record.mean_words, '.0f')} "
        f"words). One excerpt per request, closed loop, after each server's short-text phases and "
        f"a short warm-up on the excerpts. Every server cuts each text at **{record.max_seq_len} tokens** "
        f"(the export's max_seq_len; {record.truncated} of the {record.texts} excerpts are longer), so none reads less "
        "than another:",
        "",
        *[f"- `{name}`: {server.truncation}" for name, server in load.servers.items() if server.truncation],
        "",
    ]
    if not ran:
        return [*lines, "No server ran the phase.", ""]
    bento = ran["bento"][1].rps if "bento" in ran else None
    rows = [
        [*_phase(name, phase, s), fmt(bento / s.rps if bento and s.rps else None, ".2f", "×")]
        for name, (phase, s) in ran.items()
    ]
    return [*lines, *table([*PHASE_HEADER, "Bento req/s ÷ this"], rows), ""]


def bulk(results: Results) -> list[str]:
    """Bulk prediction locally and on Ray Data, from `textclf bench-bulk`."""
    report = results.bulk
    if report is None:
        return ["## Bulk prediction (local and Ray Data)", "", "Not run for this report (`textclf bench-bulk`).", ""]
    local = report.runs.get("local")
    loading = local.load_seconds if local else None  # None: a bulk.json from before it, whose local time left it out
    timing = (
        f"Both count loading the model (the local path once, {loading:.1f} s; Ray in each actor, not starting the "
        "cluster)."
        if loading is not None
        else "Ray's times include starting the actors and loading the model in each; the local path's exclude it."
    )
    warmups = ", ".join(f"{run.warmup_seconds:.1f}" for run in report.runs.values() if run.warmup_seconds is not None)
    if warmups:  # see textclf_benchmarks.bulk
        timing += f" Each `ray start` cluster is timed on its second job (its untimed first: {warmups} s)."
    rows = [
        [name, run.engine, str(run.nodes), f"{run.actors} × {run.cpus_per_actor}", f"{run.seconds:.1f}"]
        + [f"{run.texts_per_s:,.0f}", fmt(run.peak_actor_rss_mb, ".0f")]
        for name, run in report.runs.items()
    ]
    return [
        "## Bulk prediction (local and Ray Data)",
        "",
        f"`textclf bench-bulk`, {report.created_at}: one JSONL file of {report.rows:,} test-split texts (repeated). "
        f"Nodes are `ray start` processes on this machine (loopback). {timing}",
        "",
        *table(["run", "engine", "nodes", "actors × CPUs", "s", "texts/s", "peak actor RSS MiB"], rows),
        "",
        f"Ray 1 × 2 CPUs ÷ local: **{fmt(report.bulk_ray_vs_local, '.2f', '×')}**; 2 nodes × 1 CPU ÷ 1 node × 1 CPU: "
        f"**{fmt(report.bulk_ray_scaling_2_nodes, '.2f', '×')}** (a scaling proxy: both nodes share this "
        "machine's cores, disk and the driver).",
        "",
    ]


def explain(results: Results) -> list[str]:
    """Explanations of the served model (`textclf bench-explain`): the deletion gap and an explained request's cost;
    nothing where it was not run."""
    report = results.explain
    if report is None:
        return []
    gap, cost, m = report.deletion_gap, report.cost, report.machine
    lines = [
        "## Explanations",
        "",
        f"`textclf bench-explain`, {report.created_at}, on {m.cpu_model} ({m.cores} cores): `{report.variant}` "
        f"({report.engine}), each text explained over at most its first {report.max_explain_words} words "
        f"(max_seq_len {report.max_seq_len}).",
        "",
        f"Deletion gap at k={gap.k} on {gap.texts} test texts ({gap.skipped} left out: no predicted label, or at most "
        f"{gap.k} words): the drop in the explained label's log-odds with its {gap.k} top-attributed words deleted "
        f"together ({gap.mean_top_drop:.3f} on average), minus that with {gap.k} random explained words "
        f"({gap.mean_random_drop:.3f}, mean over {gap.draws} draws): **{gap.mean:.3f}**, 95 % "
        f"paired-bootstrap interval [{gap.low:.3f}, {gap.high:.3f}]. Above 0: the words an explanation ranks first "
        "move the model more than words picked at random.",
        "",
    ]
    if not cost.ran:
        return [*lines, f"Cost of an explained request: not measured: {cost.reason}.", ""]
    served, words = (cost.model or {}).get("variant"), fmt(cost.mean_explained_words, ".1f")
    return [
        *lines,
        f"Cost: {cost.server}, on loopback (its `GET /model`: `{served}`). One request at a time, each of {cost.texts} "
        f"test texts posted plain, explained (`top_k_words` {cost.top_k_words}; {words} words explained a text on "
        f"average) and plain again, the order rotating, {cost.rounds} rounds. Median client latency: plain "
        f"{fmt(cost.plain_p50_ms, '.1f')} ms, explained {fmt(cost.explained_p50_ms, '.1f')} ms, plain again "
        f"{fmt(cost.plain_aa_p50_ms, '.1f')} ms: `explain_cost_ratio_b1` = **{fmt(cost.ratio, '.2f', '×')}**; the A/A "
        f"control (plain ÷ plain) {fmt(cost.aa_ratio, '.3f')} is this run's noise floor.",
        "",
    ]
