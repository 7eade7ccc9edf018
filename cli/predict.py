"""`textclf predict`: classify every row of a file (or, on Ray Data, a folder of files) into a new file."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from textclf.errors import ConfigError
from textclf_benchmarks.config import BenchmarkConfig
from textclf_cli.common import ConfigOption, RunOption, SetOption, console, load_cfg, stage
from textclf_cli.summaries import stdout_console

if TYPE_CHECKING:
    from textclf.bulk.local import BulkProgress, BulkSummary


def predict(
    input_: Annotated[str, typer.Option("--input", "-i", help="The rows to classify: .csv, .tsv, .jsonl or .parquet.")],
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
    engine: Annotated[
        str, typer.Option(help="local: this process; ray: Ray Data on a local or existing cluster (the ray extra).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray: join this cluster (auto, ray://host:port); default RAY_ADDRESS or local.")
    ] = None,
    actors: Annotated[int, typer.Option(min=1, help="Ray: model copies (actors) in the pool.")] = 1,
    cpus_per_actor: Annotated[int, typer.Option(min=1, help="Ray: CPUs per actor = its intra-op threads.")] = 1,
    streams: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Engine copies run side by side, sharing the threads (local: the cores; ray: an actor's CPUs); "
            "default one a thread. Fewer copies hold less memory.",
        ),
    ] = None,
    on_overlength: Annotated[
        str,
        typer.Option(
            help="Texts over max_seq_len tokens: truncate (cut, flagged), or chunk (windows of max_seq_len tokens, "
            "logits aggregated per text, a `chunks` column; serve.chunk_overlap_tokens, serve.chunk_aggregation)."
        ),
    ] = "truncate",
    min_confidence: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Add an `abstained` column: true where the top probability is under this (default: "
            "serve.min_confidence).",
        ),
    ] = None,
    target_accuracy: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Instead: abstain under the lowest threshold whose validation accuracy reaches this (default: "
            "serve.target_accuracy; refused where none does).",
        ),
    ] = None,
    explain: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="K",
            help="Add an `explanation` column: per predicted label its K strongest words (each word of a text, up "
            "to serve.max_explain_words, deleted in turn: one more text to classify a word).",
        ),
    ] = None,
) -> None:
    """Classify every row of a file into a new file: the input columns + label, score, scores, error (+ abstained
    where a selective threshold is in force, + explanation with --explain).

    With `--engine ray` the input may also be a folder or a glob of such files, and the output is a folder of
    part files (the type by its extension), renamed into place when the whole job is written."""

    with stage():
        cfg = load_cfg(config, set_, run)
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine {engine!r}: use local or ray")
        from textclf.bulk.explained import ExplainSettings
        from textclf.bulk.local import BULK_OVERLENGTH

        column = text_column or cfg.data.text_column
        if on_overlength not in BULK_OVERLENGTH:
            raise ConfigError(f"--on-overlength {on_overlength!r}: use {' or '.join(BULK_OVERLENGTH)}")
        # A flag replaces both config keys: --min-confidence beside a configured target_accuracy is not "both set".
        flagged = min_confidence is not None or target_accuracy is not None
        settings = {  # the bulk run's keywords: how long texts are read, the selective threshold, explanations
            "on_overlength": on_overlength,
            "chunk_overlap_tokens": cfg.serve.chunk_overlap_tokens,
            "chunk_aggregation": cfg.serve.chunk_aggregation,
            "min_confidence": min_confidence if flagged else cfg.serve.min_confidence,
            "target_accuracy": target_accuracy if flagged else cfg.serve.target_accuracy,
            "explain": ExplainSettings(explain, cfg.serve.max_explain_words) if explain is not None else None,
        }
        if engine == "ray":
            summary = _predict_on_ray(
                cfg, input_, output, column, batch_size, bento, address, actors, cpus_per_actor, streams, settings
            )
            stdout_console().print(summary.line(), highlight=False, soft_wrap=True)
            return
        from textclf.bulk.local import run as bulk_run

        with _bulk_progress() as progress:
            summary = bulk_run(
                cfg.run_dir,
                Path(input_),
                output,
                text_column=column,
                batch_size=batch_size,
                bento=bento,
                progress=progress,
                streams=streams,
                **settings,
            )
        stdout_console().print(summary.line(), highlight=False, soft_wrap=True)


def _predict_on_ray(
    cfg: BenchmarkConfig,
    input_: str,
    output: Path,
    column: str,
    batch_size: int,
    bento: str | None,
    address: str | None,
    actors: int,
    cpus_per_actor: int,
    streams: int | None,
    settings: dict[str, Any],
) -> BulkSummary:
    try:
        import ray  # noqa: F401  (only to name the missing extra before any work)

        from textclf.bulk.ray_data import RayOptions
        from textclf.bulk.ray_data import run as ray_run
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install -e '.[ray]'") from None
    options = RayOptions(address=address, actors=actors, cpus_per_actor=cpus_per_actor, streams=streams)
    return ray_run(
        cfg.run_dir, input_, output, text_column=column, batch_size=batch_size, bento=bento, options=options, **settings
    )


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
