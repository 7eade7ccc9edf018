"""The engine envelope: how close what the service runs comes to the fastest engine measured, case by case.

For every sweep case (a synthetic batch × length on the engine alone; real and long texts through the whole path
and on the engine alone), the fastest passing exported engine's time ÷ the served engine's time. 1.0 everywhere means
the service always runs the fastest engine measured for that call; the headline is the worst case. PyTorch, the
one-thread row (another thread count, not another choice) and the served engine itself are not candidates.

An engine's time is its round-best (`timing.round_best`: the lowest of the interleaved rounds' medians, the statistic
export's routing chooses by) where the rows have it, else its p50.

Where the served pair ran every call of a case on one engine (its row's `ran_on`: the router counts its calls), what
the service runs for that call is that engine, and the case compares that engine's own row: the sweep runs each
engine's calls of a case in a block, so the pair's block and that engine's own block are the same calls on the same
engine, and their difference is the host's noise, not a choice (2026-12-02 Zen 4 sweep, round-best ms: b8-s64 the
pair 21.26 against 19.39 for openvino-int8 alone, which ran all of the pair's calls; b1-s512 28.69 against 32.95).
Where the pair ran calls on both engines, its own time is the served time: the hand-over between engines is part of
what it costs. The pair's own time stays beside every case (`measured_ratio`, `engine_envelope_min_measured`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from textclf.artifacts.schema import ExportSection
from textclf.inference.variants import VARIANTS
from textclf_benchmarks.schema import ONE_THREAD_SUFFIX, SERVED_ENGINE, BenchEngine, BenchRow, EnvelopeCase, Mode

logger = logging.getLogger(__name__)


def engine_label(variant: str, suffix: str = "") -> str:
    """The sweep's label of an exported variant: `ort-<name>` for ONNX Runtime, the name itself for OpenVINO ones
    (already `openvino-…`)."""
    spec = VARIANTS.get(variant)
    return f"{variant}{suffix}" if spec is not None and spec.engine == "openvino" else f"ort-{variant}{suffix}"


def served_label(export: ExportSection) -> str | None:
    """The label of the engine the service runs: `served` where export recorded a long-call route, else the serving
    variant's own label (None where no variant passed)."""
    if export.serving_route is not None:
        return SERVED_ENGINE
    return engine_label(export.serving_variant) if export.serving_variant else None


def is_candidate(label: str, record: BenchEngine | None, served: str, most_threads: int) -> bool:
    """Whether an engine's time can be the best of a case: a loaded exported engine on the sweep's thread count."""
    if record is None or not record.loaded or record.kind == "pytorch" or label == served:
        return False
    return not label.endswith(ONE_THREAD_SUFFIX) and (record.threads is None or record.threads >= most_threads)


def _best_ratio(times: Mapping[str, float], served: str, candidates: list[str]) -> tuple[str, float, float] | None:
    """The fastest candidate, its time, and the served engine's time (None where either is missing)."""
    served_ms = times.get(served)
    timed = [name for name in candidates if times.get(name)]
    if served_ms is None or served_ms <= 0 or not timed:
        return None
    best = min(timed, key=times.__getitem__)
    return best, times[best], served_ms


def served_by(served_row: BenchRow | None, timed: Mapping[str, float]) -> str | None:
    """The one engine the served pair ran every call of a case on, where that engine has a time in the case."""
    ran = [label for label, calls in ((served_row.ran_on or {}) if served_row else {}).items() if calls]
    return ran[0] if len(ran) == 1 and timed.get(ran[0]) else None


def envelope_cases(rows: list[BenchRow], engines: Mapping[str, BenchEngine], served: str | None) -> list[EnvelopeCase]:
    """Per (case, mode) that the served engine ran: the fastest candidate against what the service runs for the
    case's calls (`served_by`'s engine where one ran them all, else the served pair itself), by round-best time where
    every row of the case has one, else by p50; the p50 ratio and the pair's own time beside it."""
    if served is None:
        return []
    most_threads = max((e.threads or 0 for e in engines.values() if e.loaded), default=0)
    groups: dict[tuple[str, Mode], list[BenchRow]] = {}
    for row in rows:
        groups.setdefault((row.case, row.mode), []).append(row)
    out = []
    for (case, mode), members in groups.items():
        names = [r.engine for r in members if is_candidate(r.engine, engines.get(r.engine), served, most_threads)]
        steady = all(r.round_best_ms for r in members)
        times = {r.engine: (r.round_best_ms if steady else r.p50_ms) or 0.0 for r in members}
        p50 = {r.engine: r.p50_ms for r in members}
        by = served_by(next((r for r in members if r.engine == served), None), times)
        chosen = _best_ratio(times, by or served, names)
        by_p50 = _best_ratio(p50, by or served, names)
        measured = _best_ratio(times, served, names)
        if chosen is None or by_p50 is None or measured is None:
            continue
        best, best_ms, served_ms = chosen
        out.append(
            EnvelopeCase(
                case=case,
                mode=mode,
                best_engine=best,
                best_ms=best_ms,
                served_ms=served_ms,
                ratio=best_ms / served_ms,
                statistic="round_best" if steady else "p50",
                p50_ratio=by_p50[1] / by_p50[2],
                served_by=by,
                measured_served_ms=measured[2],
                measured_ratio=measured[1] / measured[2],
            )
        )
    return out


def envelope_min(cases: list[EnvelopeCase]) -> tuple[float | None, str | None]:
    """The worst case's ratio and where it is (`case (mode)`), or (None, None) when nothing was compared."""
    if not cases:
        return None, None
    worst = min(cases, key=lambda c: c.ratio)
    return worst.ratio, f"{worst.case} ({worst.mode})"


def envelope_min_p50(cases: list[EnvelopeCase]) -> float | None:
    """The worst case's ratio by p50 over all calls (None when nothing was compared)."""
    ratios = [c.p50_ratio for c in cases if c.p50_ratio is not None]
    return min(ratios) if ratios else None


def envelope_min_measured(cases: list[EnvelopeCase]) -> float | None:
    """The worst case's ratio with the served pair's own time in every case (None when nothing was compared)."""
    ratios = [c.measured_ratio for c in cases if c.measured_ratio is not None]
    return min(ratios) if ratios else None
