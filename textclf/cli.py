"""The `textclf` command line: one thin command per stage, each calling that stage's `run(cfg, run_dir)`.

Stage packages are imported inside the commands so `textclf --help` works with only the serve extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from textclf.config import LOAD_SERVERS, Config, load_config
from textclf.errors import ConfigError, TextclfError
from textclf.log import setup_logging
from textclf.manifest import atomic_write_text
from textclf.paths import MANIFEST_NAME, SCHEMAS_DIR
from textclf.schema import json_schemas

if TYPE_CHECKING:
    from textclf.bulk import BulkProgress

logger = logging.getLogger(__name__)
console = Console(stderr=True)


def _stdout() -> Console:
    # Tables stay readable when the output is a file or a CI log (rich would assume 80 columns).
    probe = Console()
    return probe if probe.is_terminal else Console(width=160)


app = typer.Typer(
    help="Fine-tune, export, benchmark and serve a BERT-family text classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (default: configs/default.yaml).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key: section.key=value (repeatable)."),
]
RunOption = Annotated[str | None, typer.Option("--run", help="Run name (artifacts/<run>); same as --set run=NAME.")]


def _load(config: Path | None, overrides: list[str] | None, run: str | None) -> Config:
    items = list(overrides or [])
    if run is not None:
        items.append(f"run={run}")
    return load_config(config, items)


def _fail(exc: BaseException) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def _stage() -> Iterator[None]:
    """Around a command: the project's own errors become one line and exit code 2 (no traceback)."""
    try:
        yield
    except TextclfError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; completed artifacts and the manifest are unchanged")
        raise typer.Exit(code=130) from None


def metrics_table(title: str, rows: Sequence[Sequence[str]], headers: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    setup_logging(log_level)


@app.command()
def train(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")] = False,
) -> None:
    """Fine-tune the base checkpoint on the labelled data (needs the train extra)."""

    with _stage():
        cfg = _load(config, set_, run)
        from train.run import run as train_run

        checkpoint = train_run(cfg, cfg.run_dir, resume=resume)
        _print_train_summary(cfg, checkpoint)


def _print_train_summary(cfg: Config, checkpoint: Path) -> None:
    from textclf.manifest import read_manifest

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
    out = _stdout()
    out.print(metrics_table(title, rows, headers))
    out.print(f"checkpoint: {checkpoint}\nmanifest:   {cfg.run_dir / MANIFEST_NAME}")
    out.print(f"wall time:  {section.wall_time_s:.0f} s ({section.trainer.epochs_run:.1f} epochs)")


@app.command()
def export(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Export this save_pretrained folder instead of the run's.")
    ] = None,
) -> None:
    """Export ONNX variants, judge each on parity, accuracy and batch invariance (needs the export extra)."""

    with _stage():
        cfg = _load(config, set_, run)
        from export.run import run as export_run

        try:
            export_run(cfg, cfg.run_dir, checkpoint=checkpoint)
        finally:
            _print_export_table(cfg)


def _print_export_table(cfg: Config) -> None:
    from textclf.manifest import read_manifest

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
    out = _stdout()
    out.print(metrics_table(title, rows, headers))
    machine = section.machine
    out.print(f"timed on {machine.cpu_model}, {machine.cores} cores, preset {machine.quantization_preset}")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def _delta_pt(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:+.2f} pt"


@app.command()
def build(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    skip_bento: Annotated[bool, typer.Option("--model-only", help="Only import into the model store.")] = False,
    bentofile: Annotated[
        Path, typer.Option(help="The bentofile to build (bentofile.gpu.yaml: the GPU flavour).")
    ] = Path("bentofile.yaml"),
) -> None:
    """Import the run's serving variant into the BentoML model store and `bentoml build` the Bento."""

    with _stage():
        from textclf.bento import build_bento, import_model

        cfg = _load(config, set_, run)
        tag = import_model(cfg.run_dir, cfg.serve.model_name)
        out = _stdout()
        out.print(f"model: {tag}")
        if not skip_bento:
            out.print(f"bento: {build_bento(bentofile.resolve())}")


@app.command()
def bench(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    device: Annotated[str, typer.Option(help="cpu, or cuda for the GPU engines.")] = "cpu",
) -> None:
    """Time PyTorch and every passing ONNX variant on the same inputs (needs the train + export extras)."""

    with _stage():
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, not {device!r}")
        cfg = _load(config, set_, run)
        from benchmarks.bench import run as bench_run

        path = bench_run(cfg, cfg.run_dir, device=device)
        _stdout().print(f"engine results: {path}")


@app.command()
def load(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    bento: Annotated[
        str | None, typer.Option(help="Serve this built Bento tag instead of service.py with the run's artifacts.")
    ] = None,
    server: Annotated[
        list[str] | None,
        typer.Option(help=f"Only these servers (repeatable): {', '.join(LOAD_SERVERS)}; default: bench.load_servers."),
    ] = None,
) -> None:
    """HTTP load tests with locust: the Bento vs a FastAPI + PyTorch baseline and the peer infinity-emb."""

    with _stage():
        cfg = _load(config, set_, run)
        unknown = set(server or []) - set(LOAD_SERVERS)
        if unknown:
            raise ConfigError(f"--server: unknown server(s) {sorted(unknown)}; use {', '.join(LOAD_SERVERS)}")
        from benchmarks.load import run as load_run

        path = load_run(cfg, cfg.run_dir, bento=bento, servers=server)
        _stdout().print(f"load results: {path}")


@app.command()
def predict(
    input_: Annotated[
        Path, typer.Option("--input", "-i", help="The rows to classify: .csv, .tsv, .jsonl or .parquet.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write them: .csv, .tsv, .jsonl or .parquet.")
    ],
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    text_column: Annotated[
        str | None, typer.Option(help="The column that holds the texts (default: data.text_column).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per ONNX call (sorted by length first).")] = 32,
    bento: Annotated[
        str | None, typer.Option(help="Read the model from the BentoML model store (a tag) instead of the run.")
    ] = None,
) -> None:
    """Classify every row of a file into a new file: the input columns + label, score, scores, error."""

    with _stage():
        cfg = _load(config, set_, run)
        from textclf.bulk import run as bulk_run

        with _bulk_progress() as progress:
            summary = bulk_run(
                cfg.run_dir,
                input_,
                output,
                text_column=text_column or cfg.data.text_column,
                batch_size=batch_size,
                bento=bento,
                progress=progress,
            )
        _stdout().print(summary.line(), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _bulk_progress() -> Iterator[Callable[[BulkProgress], None]]:
    """A progress bar over the input file (bytes, or rows for Parquet) with the texts per second so far."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("predict"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("predict", total=None, rate="")

        def update(step: BulkProgress) -> None:
            rate = f"{step.predicted:,} texts, {step.predicted / step.seconds:,.0f} texts/s" if step.seconds else ""
            bar.update(task, completed=step.done, total=step.total or None, rate=rate)

        yield update


@app.command()
def report(config: ConfigOption = None, set_: SetOption = None, run: RunOption = None) -> None:
    """Write reports/<run>/report.md, results.json and the plots from the bench and load results."""

    with _stage():
        cfg = _load(config, set_, run)
        from benchmarks.report import run as report_run

        path = report_run(cfg, cfg.run_dir)
        _stdout().print(f"report: {path}")


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--out", help="Folder for the *.schema.json files.")] = SCHEMAS_DIR,
) -> None:
    """Write the JSON Schemas of manifest.json, bench.json, load.json and results.json."""

    with _stage():
        stdout = _stdout()
        for name, document in json_schemas().items():
            atomic_write_text(out / name, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            stdout.print(f"wrote {out / name}")


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="The JSONL file to write (text, labels).")],
    rows: Annotated[int, typer.Option("--rows", min=10, help="How many texts.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the texts and their topics.")] = 0,
) -> None:
    """Write a generated multi-label data set: news-like texts tagged with any of three topics (no download).

    Train on it with --set data.path=OUT --set data.multi_label=true --set data.label_column=labels.
    """

    with _stage():
        from train.demo import write_multi_label_jsonl

        write_multi_label_jsonl(out, rows, seed)
        _stdout().print(f"wrote {rows:,} texts to {out}")


@app.command("config")
def show_config(config: ConfigOption = None, set_: SetOption = None, run: RunOption = None) -> None:
    """Print the resolved configuration (file + environment + --set) as YAML."""

    with _stage():
        import yaml

        cfg = _load(config, set_, run)
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
