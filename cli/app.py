"""The `textclf` command line: one thin command per stage, each calling that stage's `run(cfg, run_dir)`.

Stage packages are imported inside the commands so `textclf --help` works with only the serve extra.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from textclf.artifacts.files import atomic_write_text
from textclf.errors import ConfigError
from textclf.log import setup_logging
from textclf.paths import SCHEMAS_DIR
from textclf_benchmarks.config import LOAD_SERVERS
from textclf_cli.common import ConfigOption, RunOption, SetOption
from textclf_cli.common import load_cfg as _load
from textclf_cli.common import stage as _stage
from textclf_cli.predict import predict
from textclf_cli.schemas import json_schemas
from textclf_cli.summaries import print_export_table, print_train_summary, stdout_console

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)
app = typer.Typer(
    help="Fine-tune, export, benchmark and serve a BERT-family text classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
        from textclf_train.run import run as train_run

        checkpoint = train_run(cfg, cfg.run_dir, resume=resume)
        print_train_summary(cfg, checkpoint)


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
        from textclf_export.run import run as export_run
        from textclf_train.data import load_labelled_data

        try:
            export_run(cfg, cfg.run_dir, load_data=load_labelled_data, checkpoint=checkpoint)
        finally:
            print_export_table(cfg)
        from textclf_cli.tracking import log_export

        log_export(cfg)  # to the training's tracked runs (train.report_to), if it had any


@app.command()
def build(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    skip_bento: Annotated[bool, typer.Option("--model-only", help="Only import into the model store.")] = False,
    bentofile: Annotated[
        Path, typer.Option(help="The bentofile to build (bentofile.gpu.yaml: the GPU flavour).")
    ] = Path("bentofile.yaml"),
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help="Passing variants to ship beside the served ones, comma-separated (a deploy picks one with "
            "serve.variant / TEXTCLF_SERVE_VARIANT).",
        ),
    ] = "",
) -> None:
    """Import the run's served variants (and any --variants) into the BentoML model store and `bentoml build`."""

    with _stage():
        from textclf.artifacts.bento import build_bento, import_model

        cfg = _load(config, set_, run)
        extra = [name.strip() for name in variants.split(",") if name.strip()]
        tag = import_model(cfg.run_dir, cfg.serve.model_name, extra)
        out = stdout_console()
        out.print(f"model: {tag}")
        if not skip_bento:
            out.print(f"bento: {build_bento(cfg.run_dir, bentofile.resolve(), extra)}")


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
        from textclf_benchmarks.bench import run as bench_run

        path = bench_run(cfg, cfg.run_dir, device=device)
        stdout_console().print(f"engine results: {path}")


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
        from textclf_benchmarks.load import run as load_run

        path = load_run(cfg, cfg.run_dir, bento=bento, servers=server)
        stdout_console().print(f"load results: {path}")


app.command()(predict)


@app.command("bench-bulk")
def bench_bulk(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    rows: Annotated[int, typer.Option(min=1, help="Rows of the generated file (test texts repeated).")] = 100_000,
) -> None:
    """Bulk prediction locally and on Ray Data (1 × 2 CPUs; 1 node × 1 vs 2 nodes × 1) into bulk.json."""

    with _stage():
        cfg = _load(config, set_, run)
        from textclf_benchmarks.bulk import run as bulk_bench

        stdout_console().print(f"bulk results: {bulk_bench(cfg, cfg.run_dir, rows=rows)}")


@app.command("bench-long")
def bench_long(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    seed: Annotated[int, typer.Option(help="Shuffles the test sentences before they are joined into documents.")] = 0,
) -> None:
    """Long documents read truncated and in windows (chunk: mean, max) into long_docs.json and long_docs.md."""

    with _stage():
        cfg = _load(config, set_, run)
        from textclf_benchmarks.long_docs import run as long_docs_run

        stdout_console().print(f"long documents: {long_docs_run(cfg, cfg.run_dir, seed=seed)}")


@app.command("bench-explain")
def bench_explain(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    texts: Annotated[int, typer.Option(min=1, hidden=True, help="Test texts of the deletion gap.")] = 500,
    cost_texts: Annotated[int, typer.Option(min=1, hidden=True, help="Test texts of the cost's requests.")] = 100,
    rounds: Annotated[int, typer.Option(min=1, hidden=True, help="Passes over the cost's texts.")] = 5,
) -> None:
    """The served explanations' deletion gap at k=3 and an explained request's cost over a plain one (a Bento on
    loopback, one request at a time) into explain.json."""

    with _stage():
        cfg = _load(config, set_, run)
        from textclf_benchmarks.explain import run as explain_run

        path = explain_run(cfg, cfg.run_dir, texts=texts, cost_texts=cost_texts, rounds=rounds)
        stdout_console().print(f"explanations: {path}")


@app.command("bench-drift")
def bench_drift(
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    request_texts: Annotated[int, typer.Option(min=1, hidden=True, help="Texts per request of a stream.")] = 8,
    chunk_texts: Annotated[int, typer.Option(min=1, hidden=True, help="Texts per estimated-accuracy chunk.")] = 250,
    cost_texts: Annotated[int, typer.Option(min=2, hidden=True, help="Test texts of the cost measurement.")] = 500,
    seed: Annotated[int, typer.Option(hidden=True, help="Draws the speech excerpts.")] = 0,
) -> None:
    """The served drift monitor on real streams (validation texts, speech excerpts, one class, length-matched
    excerpts; a one-worker Bento on loopback) and its CPU per answered text against the engine's at b1 into
    drift.json (needs the train extra, for the validation split)."""

    with _stage():
        cfg = _load(config, set_, run)
        from textclf_benchmarks.drift import run as drift_run
        from textclf_train.data import load_labelled_data

        sizes = {"request_texts": request_texts, "chunk_texts": chunk_texts, "cost_texts": cost_texts, "seed": seed}
        path = drift_run(cfg, cfg.run_dir, load_data=load_labelled_data, **sizes)
        stdout_console().print(f"drift: {path}")


@app.command()
def monitor(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="BentoML's monitoring log of the service (a data.<worker>.log, or a folder of them) or a file "
            "`textclf predict` wrote.",
        ),
    ],
    config: ConfigOption = None,
    set_: SetOption = None,
    run: RunOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder; default reports/<run>/monitor.")] = None,
) -> None:
    """Judge collected answers against the run's drift reference, window by window, with the service's own tests:
    monitor.md, monitor.json and monitor.png."""

    with _stage():
        from textclf_cli.monitor import run as monitor_run

        stdout_console().print(monitor_run(_load(config, set_, run), data, out), highlight=False, soft_wrap=True)


@app.command()
def report(config: ConfigOption = None, set_: SetOption = None, run: RunOption = None) -> None:
    """Write reports/<run>/report.md, results.json and the plots from the bench and load results."""

    with _stage():
        cfg = _load(config, set_, run)
        from textclf_benchmarks.report import run as report_run

        path = report_run(cfg, cfg.run_dir)
        stdout_console().print(f"report: {path}")
        from textclf_cli.tracking import log_report

        log_report(cfg, path.parent)  # to the training's tracked runs (train.report_to), if it had any


@app.command()
def schema(
    out: Annotated[Path, typer.Option("--out", help="Folder for the *.schema.json files.")] = SCHEMAS_DIR,
) -> None:
    """Write the JSON Schemas of manifest.json, bench.json, load.json and results.json."""

    with _stage():
        stdout = stdout_console()
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
        from textclf_train.demo import write_multi_label_jsonl

        write_multi_label_jsonl(out, rows, seed)
        stdout_console().print(f"wrote {rows:,} texts to {out}")


@app.command("config")
def show_config(config: ConfigOption = None, set_: SetOption = None, run: RunOption = None) -> None:
    """Print the resolved configuration (file + environment + --set) as YAML."""

    with _stage():
        import yaml

        cfg = _load(config, set_, run)
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
