"""PNG plots of the benchmark results (matplotlib, no display): the ratios, per case and per load phase. The
absolute times are in report.md's tables."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.artifacts.files import atomic_write_bytes
from textclf_benchmarks.schema import Headline, NotRun, ServerRecord


def _figure(*, width: float, height: float, panels: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, panels, figsize=(width, height))


def _save(fig: Any, path: Path) -> bool:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def speedup_bars(speedups: dict[str, dict[str, float]], path: Path) -> bool:
    """Grouped bars: each engine's speed-up over PyTorch eager fp32 per case."""
    if not speedups:
        return False
    cases = list(dict.fromkeys(case for values in speedups.values() for case in values))  # in the sweep's order
    engines = sorted(speedups)
    fig, ax = _figure(width=11, height=4.8)
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        xs = [c + i * width for c in range(len(cases))]
        ax.bar(xs, [speedups[engine].get(case, 0.0) for case in cases], width, label=engine)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([c + width * (len(engines) - 1) / 2 for c in range(len(cases))], cases, rotation=45, ha="right")
    ax.set_ylabel("speed-up over PyTorch eager fp32 (p50)")
    ax.set_title("speed-up over PyTorch, same run")
    ax.legend(fontsize=8)
    return _save(fig, path)


def http_panels(servers: dict[str, ServerRecord], path: Path) -> bool:
    """req/s and p99 per server against the number of users."""
    ran = {name: s for name, s in servers.items() if s.ran and s.results}
    if not ran:
        return False
    fig, (left, right) = _figure(width=9, height=4, panels=2)
    for name, server in sorted(ran.items()):
        # Only the ramp ("1", "8", "32", ...): a repeated user count such as "1-after-32" is not on this curve.
        phases = sorted((p for key, p in server.results.items() if key.isdigit()), key=lambda p: p.users)
        left.plot([p.users for p in phases], [p.rps for p in phases], marker="o", label=name)
        right.plot([p.users for p in phases], [p.p99_ms for p in phases], marker="o", label=name)
    right.set_yscale("log")
    for ax, label in ((left, "requests / s"), (right, "p99 latency (ms)")):
        ax.set_xlabel("concurrent users")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("HTTP load: one text per request, closed loop")
    return _save(fig, path)


def confidence(record: ConfidenceRecord | NotRun, headline: Headline, path: Path) -> bool:
    """The serving variant's test split: its reliability diagram before and after calibration (accuracy against mean
    confidence per bin), and its risk–coverage curve with the selective point at target accuracy 0.95."""
    if not isinstance(record, ConfidenceRecord) or record.test is None:
        return False
    test, h, curve = record.test, headline, record.risk_coverage
    fig, (left, right) = _figure(width=10, height=4.5, panels=2)
    left.plot([0, 1], [0, 1], color="black", linewidth=0.8, label="perfectly calibrated")
    for name, bins in (("raw", test.reliability_before), ("fitted", test.reliability_after)):
        kept = [b for b in bins if b.count]
        left.plot([b.mean_confidence for b in kept], [b.accuracy for b in kept], marker="o", label=f"{name} scores")
    left.set(xlabel="mean confidence in a bin", ylabel="its accuracy", title=f"reliability, {test.texts} test texts")
    right.plot([p.coverage for p in curve], [p.accuracy for p in curve], marker=".", label="thresholds from validation")
    right.plot([h.selective_coverage_at_0_95], [h.selective_accuracy_at_0_95], "o", color="red", label="target 0.95")
    right.set(xlabel="coverage (texts answered)", ylabel="accuracy on them", title="risk–coverage, test split")
    for ax in (left, right):
        ax.legend(fontsize=8)
    return _save(fig, path)
