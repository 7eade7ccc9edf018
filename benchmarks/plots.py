"""PNG plots of the benchmark results (matplotlib, no display)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

from textclf.artifacts.files import atomic_write_bytes
from textclf_benchmarks.schema import BenchRow, ServerRecord


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_curves(rows: list[BenchRow], vary: Literal["batch", "seq_len"], fixed_value: int, path: Path) -> bool:
    """p50 latency per engine against `vary` (batch or seq_len) at one value of the other; False if no data."""
    plt = _pyplot()
    points: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row.mode != "session" or row.seq_len is None:
            continue  # real-text rows have no fixed length to plot against
        x, held = (row.batch, row.seq_len) if vary == "batch" else (row.seq_len, row.batch)
        if held == fixed_value:
            points.setdefault(row.engine, []).append((x, row.p50_ms))
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine, values in sorted(points.items()):
        xs, ys = zip(*sorted(values), strict=True)
        ax.plot(xs, ys, marker="o", label=engine)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size" if vary == "batch" else "sequence length (tokens)")
    ax.set_ylabel("p50 latency (ms)")
    held_name = "sequence length" if vary == "batch" else "batch"
    ax.set_title(f"latency vs {'batch' if vary == 'batch' else 'sequence length'} ({held_name} {fixed_value})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _case_order(case: str) -> tuple[int, int, int]:
    """b1-s16 < b1-s64 < ... < b32-s512 < real-b1 < real-b32 < real-b32-sorted < long-b1 < long-b8."""
    for group, prefix in ((1, "real-b"), (2, "long-b")):
        if case.startswith(prefix):
            batch, _, sorted_ = case[len(prefix) :].partition("-")
            return (group, int(batch), int(bool(sorted_)))
    batch, seq = case[1:].split("-s")
    return (0, int(batch), int(seq))


def speedup_bars(speedups: dict[str, dict[str, float]], path: Path) -> bool:
    """Grouped bars: each engine's speed-up over PyTorch eager fp32 per case."""
    plt = _pyplot()
    if not speedups:
        return False
    cases = sorted({case for values in speedups.values() for case in values}, key=_case_order)
    engines = sorted(speedups)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / max(1, len(engines))
    for i, engine in enumerate(engines):
        xs = [c + i * width for c in range(len(cases))]
        ax.bar(xs, [speedups[engine].get(case, 0.0) for case in cases], width, label=engine)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([c + width * (len(engines) - 1) / 2 for c in range(len(cases))], cases, rotation=45, ha="right")
    ax.set_ylabel("speed-up over PyTorch eager fp32 (p50)")
    ax.set_title("speed-up over PyTorch, same run")
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def http_panels(servers: dict[str, ServerRecord], path: Path) -> bool:
    """req/s and p99 per server against the number of users."""
    plt = _pyplot()
    ran = {name: s for name, s in servers.items() if s.ran and s.results}
    if not ran:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    for name, server in sorted(ran.items()):
        # Only the ramp ("1", "8", "32", ...): a repeated user count such as "1-after-32" is not on this curve.
        phases = sorted((p for key, p in server.results.items() if key.isdigit()), key=lambda p: p.users)
        users = [p.users for p in phases]
        left.plot(users, [p.rps for p in phases], marker="o", label=name)
        right.plot(users, [p.p99_ms for p in phases], marker="o", label=name)
    left.set_xlabel("concurrent users")
    left.set_ylabel("requests / s")
    right.set_xlabel("concurrent users")
    right.set_ylabel("p99 latency (ms)")
    right.set_yscale("log")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("HTTP load: one text per request, closed loop")
    _save(fig, path)
    return True
