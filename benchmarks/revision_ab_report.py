"""`reports/<run>/revision_ab.{json,md}`: the same served model at two git revisions, phases interleaved.

The headline per user count is the median over rounds of each round's new ÷ old ratio: the two phases of a round
ran minutes apart at most, so a drift of the machine between rounds cancels in the ratio.
"""

from __future__ import annotations

import statistics
from typing import Literal

from pydantic import Field

from textclf.artifacts.records import SCHEMA_VERSION, Machine, Record
from textclf_benchmarks.markdown_cells import fmt, table
from textclf_benchmarks.revision_manifest import collapse
from textclf_benchmarks.schema import LoadPhase

_SUBJECT_CHARS = 160  # of a commit subject in the Markdown (the JSON has it whole)
Side = Literal["old", "new"]
SIDES: tuple[Side, Side] = ("old", "new")


class RevisionRecord(Record):
    """One side of the comparison: the code it ran and what it served."""

    rev: str = Field(description="as asked (`38a80ab^`, `HEAD`, or `.` for the checkout as it stands)")
    sha: str
    subject: str
    checkout: str = Field(description="the folder its server ran in (a temporary git worktree, or the checkout)")
    textclf_file: str = Field(description="textclf/__init__.py as the revision's Python resolves it")
    server_textclf_files: list[str] = Field(
        default_factory=list, description="textclf files in the running workers' stacks (py-spy dump)"
    )
    stripped_manifest_keys: list[str] = Field(
        default_factory=list, description="keys of today's manifest this revision's schema refuses, removed"
    )
    run_dir: str = Field(description="the run folder it served from (a linked copy where keys were removed)")
    served_variants: list[str]
    model: dict[str, object] = Field(default_factory=dict, description="its GET /model answer")


class PhaseRun(Record):
    """One locust phase of one side."""

    round: int
    side: Side
    users: int
    phase: LoadPhase


class UsersSummary(Record):
    """Both sides at one user count, over every round."""

    users: int
    rps: dict[Side, float] = Field(description="median over rounds")
    p50_ms: dict[Side, float]
    p99_ms: dict[Side, float]
    failures: dict[Side, int] = Field(description="summed over rounds")
    rps_ratio: float = Field(description="median over rounds of new ÷ old req/s")
    rps_ratio_per_round: list[float]
    p50_ratio: float = Field(description="median over rounds of new ÷ old p50")
    p99_ratio: float = Field(description="median over rounds of new ÷ old p99")


class RevisionAbReport(Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    command: str
    run: str
    machine: Machine
    lscpu: dict[str, str] = Field(description="lscpu's model name, family, model, stepping, cores")
    versions: dict[str, str]
    settings: dict[str, object] = Field(description="what both servers ran with")
    request: str
    order: str
    revisions: dict[Side, RevisionRecord]
    changes: list[str] = Field(description="git log --oneline old..new -- textclf service.py configs")
    phases: list[PhaseRun] = Field(default_factory=list)
    summary: list[UsersSummary] = Field(default_factory=list)
    wall_time_s: float | None = None


ByRound = dict[Side, dict[int, LoadPhase]]


def _ratios(at: ByRound, rounds: list[int], metric: str) -> list[float]:
    return [getattr(at["new"][r], metric) / getattr(at["old"][r], metric) for r in rounds]


def _medians(at: ByRound, metric: str) -> dict[Side, float]:
    return {side: statistics.median(getattr(phase, metric) for phase in at[side].values()) for side in SIDES}


def summarize(phases: list[PhaseRun]) -> list[UsersSummary]:
    """Per user count: each side's medians, and the median of each round's new ÷ old ratios (rounds that ran
    both sides only)."""
    out = []
    for users in sorted({p.users for p in phases}):
        at: ByRound = {
            side: {p.round: p.phase for p in phases if p.users == users and p.side == side} for side in SIDES
        }
        rounds = sorted(set(at["old"]) & set(at["new"]))
        if not rounds:
            continue
        at = {side: {r: at[side][r] for r in rounds} for side in SIDES}
        out.append(
            UsersSummary(
                users=users,
                rps=_medians(at, "rps"),
                p50_ms=_medians(at, "p50_ms"),
                p99_ms=_medians(at, "p99_ms"),
                failures={side: sum(phase.failures for phase in at[side].values()) for side in SIDES},
                rps_ratio=statistics.median(_ratios(at, rounds, "rps")),
                rps_ratio_per_round=[round(r, 4) for r in _ratios(at, rounds, "rps")],
                p50_ratio=statistics.median(_ratios(at, rounds, "p50_ms")),
                p99_ratio=statistics.median(_ratios(at, rounds, "p99_ms")),
            )
        )
    return out


def render(report: RevisionAbReport) -> str:
    old, new = report.revisions["old"], report.revisions["new"]
    lines = [
        f"# Revision A/B: {new.rev} ({new.sha[:7]}) vs {old.rev} ({old.sha[:7]})",
        "",
        f"- date: {report.created_at}; machine: {report.lscpu.get('model_name', report.machine.cpu_model)} (lscpu: "
        f"family {report.lscpu.get('family', '?')}, model {report.lscpu.get('model', '?')}, stepping "
        f"{report.lscpu.get('stepping', '?')}), {report.machine.cores} usable cores",
        f"- command: `{report.command}`",
        f"- old: `{old.sha}` {old.subject[:_SUBJECT_CHARS]}",
        f"- new: `{new.sha}` {new.subject[:_SUBJECT_CHARS]}",
        f"- model: {old.model.get('variant')} sha256 {str(old.model.get('sha256'))[:12]} (old) / "
        f"{new.model.get('variant')} sha256 {str(new.model.get('sha256'))[:12]} (new), run `{report.run}`",
        f"- settings: {', '.join(f'{k}={v}' for k, v in report.settings.items())}",
        f"- requests: {report.request}",
        f"- order: {report.order}",
        "",
        "Median over rounds; ratio = median of each round's new ÷ old.",
        "",
    ]
    rows = [
        [
            str(s.users),
            fmt(s.rps["old"], ".1f"),
            fmt(s.rps["new"], ".1f"),
            fmt(s.rps_ratio, ".3f"),
            ", ".join(f"{r:.3f}" for r in s.rps_ratio_per_round),
            f"{s.p50_ms['old']:.1f} / {s.p50_ms['new']:.1f}",
            fmt(s.p50_ratio, ".3f"),
            f"{s.p99_ms['old']:.1f} / {s.p99_ms['new']:.1f}",
            fmt(s.p99_ratio, ".3f"),
            f"{s.failures['old']} / {s.failures['new']}",
        ]
        for s in report.summary
    ]
    headers = ["users", "old req/s", "new req/s", "new/old req/s", "per round", "p50 ms old / new", "p50 new/old"]
    lines += table([*headers, "p99 ms old / new", "p99 new/old", "failures old / new"], rows)
    lines += ["", "## Every phase, in the order run", ""]
    phase_rows = [
        [str(p.round), p.side, str(p.users), fmt(p.phase.rps, ".1f"), fmt(p.phase.p50_ms, ".1f")]
        + [fmt(p.phase.p99_ms, ".1f"), str(p.phase.failures), fmt(p.phase.engine_busy, ".2f")]
        for p in report.phases
    ]
    lines += table(["round", "side", "users", "req/s", "p50 ms", "p99 ms", "failures", "engine busy"], phase_rows)
    lines += ["", "## The two sides", ""]
    for side in SIDES:
        record = report.revisions[side]
        stripped = ", ".join(f"`{k}`" for k in collapse(record.stripped_manifest_keys)) or "none"
        lines += [
            f"- {side} ({record.rev}): ran in `{record.checkout}`, imports `{record.textclf_file}`; workers' stacks "
            f"show {', '.join(f'`{f}`' for f in record.server_textclf_files) or 'n/a'}; served "
            f"{', '.join(record.served_variants)} from `{record.run_dir}`; manifest keys removed: {stripped}",
        ]
    lines += ["", "## What else changed between them (textclf/, service.py, configs/)", ""]
    lines += [f"- {change}" for change in report.changes] or ["- nothing"]
    return "\n".join(lines) + "\n"
