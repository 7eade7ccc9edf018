"""The engine envelope: per sweep case, the fastest passing exported engine's time ÷ the served engine's (1.0: the
service runs the fastest engine measured; above 1.0, by noise), its geometric mean the headline, the worst case
beside it; and the A/A control, what the service runs loaded twice (`served`, `served-aa`: every engine compared is
a load of its own, so one object timed twice would understate the noise), `engine_aa_spread` = the median over the
cases of |served ÷ served-aa − 1|. See docs/benchmarks.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from textclf.inference.timing import aa_spread
from textclf.inference.variants import VARIANTS
from textclf_benchmarks.schema import (
    ONE_THREAD_SUFFIX,
    SERVED_AA_ENGINE,
    SERVED_ENGINE,
    BenchEngine,
    BenchRow,
    EnvelopeCase,
    Mode,
)


def engine_label(variant: str, suffix: str = "") -> str:
    """The sweep's label of an exported variant: `ort-<name>` for ONNX Runtime, the name itself for OpenVINO ones
    (already `openvino-…`)."""
    spec = VARIANTS.get(variant)
    return f"{variant}{suffix}" if spec is not None and spec.engine == "openvino" else f"ort-{variant}{suffix}"


def case_ms(row: BenchRow) -> float:
    """A row's time for comparisons: its round median, or its p50 in a sweep written before round medians."""
    return row.round_median_ms if row.round_median_ms is not None else row.p50_ms


def is_candidate(label: str, record: BenchEngine | None, most_threads: int) -> bool:
    """Whether an engine's time can be the best of a case: a loaded exported engine on the sweep's thread count (a
    sweep before the `served` entries named a variant's own row as served: that row is a candidate, so its cases read
    at most 1.0)."""
    if record is None or not record.loaded or record.kind == "pytorch" or label in (SERVED_ENGINE, SERVED_AA_ENGINE):
        return False
    return not label.endswith(ONE_THREAD_SUFFIX) and (record.threads is None or record.threads >= most_threads)


def envelope_cases(rows: list[BenchRow], engines: Mapping[str, BenchEngine], served: str | None) -> list[EnvelopeCase]:
    """Per (case, mode) that the served engine and at least one candidate ran: the fastest candidate against the
    served engine, and the A/A pair's ratio where the sweep has the twin."""
    if served is None:
        return []
    most_threads = max((e.threads or 0 for e in engines.values() if e.loaded), default=0)
    groups: dict[tuple[str, Mode], dict[str, float]] = {}
    for row in rows:
        groups.setdefault((row.case, row.mode), {})[row.engine] = case_ms(row)
    out = []
    for (case, mode), times in groups.items():
        timed = [name for name in times if is_candidate(name, engines.get(name), most_threads)]
        served_ms, twin_ms = times.get(served), times.get(SERVED_AA_ENGINE)
        if not served_ms or not timed:
            continue
        best = min(timed, key=times.__getitem__)
        out.append(
            EnvelopeCase(
                case=case,
                mode=mode,
                best_engine=best,
                best_ms=times[best],
                served_ms=served_ms,
                ratio=times[best] / served_ms,
                aa_ratio=served_ms / twin_ms if twin_ms else None,
            )
        )
    return out


def envelope_figures(cases: list[EnvelopeCase]) -> dict[str, float | str | None]:
    """The headline's envelope keys: geometric mean and minimum of the ratios, where the minimum is, and the A/A
    spread (None where nothing was compared, or the sweep has no A/A pair)."""
    if not cases:
        return {}
    worst = min(cases, key=lambda c: c.ratio)
    pairs = [c.aa_ratio for c in cases if c.aa_ratio is not None]
    return {
        "engine_envelope_geomean": math.exp(sum(math.log(c.ratio) for c in cases) / len(cases)),
        "engine_envelope_min": worst.ratio,
        "engine_envelope_case": f"{worst.case} ({worst.mode})",
        "engine_aa_spread": float(np.median([aa_spread(ratio, 1.0) for ratio in pairs])) if pairs else None,
    }
