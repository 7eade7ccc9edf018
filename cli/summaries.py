"""What `textclf train` and `textclf export` print when they finish: a table of the manifest section they wrote."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from textclf.artifacts.manifest import read_manifest
from textclf.config import Config
from textclf.paths import MANIFEST_NAME


def stdout_console() -> Console:
    # Tables stay readable when the output is a file or a CI log (rich would assume 80 columns).
    probe = Console()
    return probe if probe.is_terminal else Console(width=160)


def metrics_table(title: str, rows: Sequence[Sequence[str]], headers: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table


def print_train_summary(cfg: Config, checkpoint: Path) -> None:
    manifest = read_manifest(cfg.run_dir)
    section = manifest.train if manifest else None
    if section is None:  # a non-zero torchrun rank: rank 0 reports
        return
    rows = [
        (split, str(m.n), f"{m.accuracy:.4f}", f"{m.macro_f1:.4f}", _fmt(m.micro_f1, ".4f"))
        for split, m in (("validation", section.metrics.validation), ("test", section.metrics.test))
    ]
    headers = ("split", "rows", "accuracy", "macro-F1", "micro-F1")
    title = f"train: run '{cfg.run}'"
    if section.threshold is not None:
        title += f" (multi-label at threshold {section.threshold}; accuracy = whole label set right)"
    out = stdout_console()
    out.print(metrics_table(title, rows, headers))
    out.print(f"checkpoint: {checkpoint}\nmanifest:   {cfg.run_dir / MANIFEST_NAME}")
    out.print(f"wall time:  {section.wall_time_s:.0f} s ({section.trainer.epochs_run:.1f} epochs)")


def print_export_table(cfg: Config) -> None:
    manifest = read_manifest(cfg.run_dir)
    section = manifest.export if manifest else None
    if section is None:
        return
    multi_label = section.gate_metric == "micro_f1"
    metric = "micro-F1" if multi_label else "accuracy"
    reference = section.pytorch.test_micro_f1 if multi_label else section.pytorch.test_accuracy
    rows = []
    for name, v in section.variants.items():
        rows.append(
            (
                name + (" *" if name == section.serving_variant else ""),
                f"{v.bytes / 1e6:.1f}" if v.bytes else "-",
                _fmt(v.parity_max_abs_diff, ".1e"),
                _fmt(v.test_micro_f1 if multi_label else v.test_accuracy, ".4f"),
                _delta_pt(v.metric_delta if multi_label else v.accuracy_delta),
                f"{v.batch_invariance.flips} flips" if v.batch_invariance else "-",
                "-" if v.latency_ms is None else f"{v.latency_ms:.2f} / {_fmt(v.batch32_ms_per_text, '.2f')}",
                ("pass" if v.passed else "REFUSED: " + v.reason) + (" (unchanged)" if v.skipped else ""),
            )
        )
    headers = ("variant", "MB", "parity", metric, f"Δ {metric}", "invariance", "ms b1 / b32 per text", "verdict")
    title = f"export: run '{cfg.run}' (PyTorch test {metric} {_fmt(reference, '.4f')}; * = serving variant)"
    out = stdout_console()
    out.print(metrics_table(title, rows, headers))
    machine = section.machine
    out.print(f"timed on {machine.cpu_model}, {machine.cores} cores, preset {machine.quantization_preset}")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def _delta_pt(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:+.2f} pt"
