"""The engine envelope: how close what the service runs comes to the fastest engine measured, case by case.

For every sweep case (a synthetic batch × length on the engine alone; real and long texts through the whole path
and on the engine alone), the fastest passing exported engine's p50 ÷ the served engine's p50. 1.0 everywhere means
the service always runs the fastest engine measured for that call; the headline is the worst case. PyTorch, the
one-thread row (another thread count, not another choice) and the served engine itself are not candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from textclf.schema import ExportSection
from textclf.variants import VARIANTS
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


def envelope_cases(rows: list[BenchRow], engines: Mapping[str, BenchEngine], served: str | None) -> list[EnvelopeCase]:
    """Per (case, mode) that the served engine ran: the fastest candidate's p50 against the served engine's."""
    if served is None:
        return []
    most_threads = max((e.threads or 0 for e in engines.values() if e.loaded), default=0)
    groups: dict[tuple[str, Mode], dict[str, float]] = {}
    for row in rows:
        groups.setdefault((row.case, row.mode), {})[row.engine] = row.p50_ms
    out = []
    for (case, mode), times in groups.items():
        served_ms = times.get(served)
        candidates = {
            name: ms for name, ms in times.items() if is_candidate(name, engines.get(name), served, most_threads)
        }
        if served_ms is None or served_ms <= 0 or not candidates:
            continue
        best = min(candidates, key=candidates.__getitem__)
        out.append(
            EnvelopeCase(
                case=case,
                mode=mode,
                best_engine=best,
                best_ms=candidates[best],
                served_ms=served_ms,
                ratio=candidates[best] / served_ms,
            )
        )
    return out


def envelope_min(cases: list[EnvelopeCase]) -> tuple[float | None, str | None]:
    """The worst case's ratio and where it is (`case (mode)`), or (None, None) when nothing was compared."""
    if not cases:
        return None, None
    worst = min(cases, key=lambda c: c.ratio)
    return worst.ratio, f"{worst.case} ({worst.mode})"
