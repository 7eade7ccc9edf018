"""Bulk prediction on Ray Data: the same rows in, the same columns out, across every node of a Ray cluster.

Ray Data reads the input files in blocks, an actor pool classifies them (each actor loads the torch-free
`Classifier` once, from model files shipped through Ray's object store and verified against the manifest's
sha256), and Ray Data's writers write a folder of part files. Nothing here is a scheduler of our own: retries after
a lost worker, backpressure and the progress bar are Ray's. The folder is written under a hidden name and renamed
into place when every block is written, so a failed or interrupted job leaves no output that looks complete.

Ray is imported only here, and only when `--engine ray` is asked for: the serve-only install and the Bento stay
free of it. Each actor's engines run `cpus_per_actor` intra-op threads in all, the CPUs Ray reserves for it, so
actors sharing a node never oversubscribe its cores (onnxruntime issue #16793); by default one engine copy a CPU, each
on one thread, side by side (`textclf.inference.streams`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf.artifacts.manifest import require_export, verify_files
from textclf.bulk.explained import ExplainSettings, arrow_batch, pandas_blocks
from textclf.bulk.local import BULK_OVERLENGTH, BulkSummary, bulk_streams, model_dir
from textclf.bulk.rows import added_columns, columns_of
from textclf.bulk.sinks import RENAME_PREFIX, cell_text
from textclf.bulk.tables import CHUNK_ROWS, file_format, input_files, json_object, open_source
from textclf.errors import ArtifactError, InputError
from textclf.inference.confidence import resolve_threshold
from textclf.inference.folders import engine_of, identity_sha256, passed_variant, read_sidecar
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import OverlengthPolicy, TextOptions
from textclf.paths import MANIFEST_NAME, ONNX_DIR

logger = logging.getLogger(__name__)

# JSONL inputs are read as raw lines (`read_text`'s one column) and parsed in the actor, as the local reader does.
LINE = "text"
# Reading and writing reserve no CPU: a pool of actors × cpus_per_actor that takes every CPU of the cluster (the
# usual sizing) would otherwise leave the read tasks waiting for a CPU forever (seen: a 2-node × 1-CPU cluster with
# 2 actors hung at "3/2 CPU"). They are light next to inference, and Ray Data's backpressure bounds them.
IO_TASKS = {"num_cpus": 0}
# Blocks the input is read in (each becomes one actor task and one write task): at least this many per actor, so a
# pool whose actors start at different times still shares the work out, and at most BLOCK_BYTES of input each.
# Fewer, larger blocks than Ray's default (1 MiB): every write task runs in a worker process of its own, started for
# it and stopped a second after under Ray's default worker pool (no idle worker kept beyond the node's CPU count, and
# the pool's actors and Ray Data's own actors already count; WORKER_POOL below lifts that where we start the
# cluster), ~1.4 CPU-s of Python and Ray imports each, taken from the actors' cores. Seen
# on a 2-core Intel Xeon (Sapphire Rapids) with 20,000 rows: 4 such workers in a 29 s job at 1 MiB blocks.
BLOCKS_PER_ACTOR = 4
BLOCK_BYTES = 16 * 2**20
# The raylet's worker pool, for a cluster this process starts (and the benchmark's `ray start` nodes, as RAY_<key>
# variables): keep finished task workers for the job's length instead of stopping them after a second, so the next
# read or write task reuses one rather than paying a fresh worker's start. 20,000 rows, 1 actor x 2 CPUs, 2-core AMD
# EPYC Zen 3 (2026-12-02): fresh idle workers 7 -> 3, their CPU 11.4 -> 5.9 s, 313 -> 327 texts/s. A cluster joined
# with --address keeps its own settings (docs/bulk.md: On Ray Data).
WORKER_POOL = {"num_workers_soft_limit": 16, "idle_worker_killing_time_threshold_ms": 600_000}


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # "auto", "ray://host:port", or None: RAY_ADDRESS, else a local cluster
    actors: int = 1
    cpus_per_actor: int = 1
    # Rows per Ray Data batch handed to an actor: those of the local path's chunk (CHUNK_ROWS), since an actor sorts
    # the texts of its batch by length as the local path sorts a chunk's; at 1024 rows the calls padded 3 % more
    # tokens (the default run's test texts, batches of 32).
    batch_rows: int = CHUNK_ROWS
    # Engine copies in each actor, sharing its CPUs (`textclf.inference.streams`); None: one a CPU.
    streams: int | None = None


def check_output_folder(path: Path) -> None:
    """The output is a folder of part files whose type the name's extension gives (preds.parquet/part-*)."""
    file_format(path)
    if path.is_file():
        raise InputError(f"{path}: is a file; --engine ray writes a folder of part files, give a new name")


def _model_files(folder: Path) -> tuple[dict[str, bytes], str]:
    """The manifest and the served variants' files, to ship to every actor (no shared filesystem needed), each
    verified here against the manifest's sha256 first; and the model's name for the summary (variant and sha256).

    Only the files are checked here: loading the engines (ONNX Runtime and OpenVINO, seconds of compiling) is each
    actor's job, and the actors verify what they receive again.

    Raises:
        ArtifactError: no serving variant, a refused one, or a file missing or changed.
    """
    export = require_export(folder)
    if not export.serving_variant:
        raise ArtifactError(f"{folder}: the export chose no serving variant (none passed its gates)")
    files = {MANIFEST_NAME: (folder / MANIFEST_NAME).read_bytes()}
    for name in export.served_variants():
        record = passed_variant(folder, export, name)
        verify_files(folder / ONNX_DIR / name, record.files)
        for relative in record.files:
            files[f"{ONNX_DIR}/{name}/{relative}"] = (folder / ONNX_DIR / name / relative).read_bytes()
    serving = folder / ONNX_DIR / export.serving_variant
    sidecar = read_sidecar(serving)
    sha256 = identity_sha256(export.variants[export.serving_variant].files, engine_of(sidecar))
    model = f"{sidecar.get('variant', serving.name)} {sha256 or ''}".strip()
    return files, model


def _abstain_under(folder: Path, min_confidence: float | None, target_accuracy: float | None) -> float | None:
    """The threshold the actors abstain under, resolved here from the serving variant's confidence record as the
    local path resolves it at load, so a refused setting fails before any cluster work (ConfigError)."""
    export = require_export(folder)
    confidence = export.variants[export.serving_variant].confidence if export.serving_variant else None
    multi_label = export.threshold is not None
    selective = resolve_threshold(
        confidence, min_confidence=min_confidence, target_accuracy=target_accuracy, multi_label=multi_label
    )
    return selective.threshold if selective is not None else None


class Predictor:
    """One actor of the pool: writes the shipped model to local disk, verifies and loads it once, then classifies
    the batches Ray hands it (pandas frames, input columns as read)."""

    def __init__(
        self,
        model: Any,
        text_column: str,
        batch_size: int,
        threads: int,
        output_format: str,
        lines: bool,
        chunking: dict[str, Any] | None = None,
        streams: int = 1,
        min_confidence: float | None = None,
        explain: ExplainSettings | None = None,
    ) -> None:
        import ray

        # The tokenizer's thread pool (Rust, rayon) would take every core of the node; an actor has its CPUs only.
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        files: dict[str, bytes] = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        chunking = dict(chunking or {})
        self.options = TextOptions(on_overlength=chunking.pop("on_overlength", "truncate"))
        # The files live on disk only while the engines load (they hold what they read; OpenVINO's mapping of its
        # .bin outlives the name): an actor restarted after a lost worker, or a pool per job, would otherwise leave
        # a copy of the model (81 MB for the default run) in the node's temp folder each time.
        folder = Path(tempfile.mkdtemp(prefix="textclf-model-"))
        try:
            for relative, data in files.items():
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_bytes(data)
            # sha256-verified; `chunking`: the windows of `chunk` (serve.chunk_*); `min_confidence`: the driver's
            self.classifier = Classifier.from_run(
                folder, intra_op_threads=threads, streams=streams, min_confidence=min_confidence, **chunking
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.text_column = text_column
        self.batch_size = batch_size
        self.output_format = output_format
        self.lines = lines
        self.explain = explain
        columns = columns_of(self.classifier, self.options, explain)
        self.added, self.ints = [c.name for c in columns], [c.name for c in columns if c.kind == "int"]

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        rows = (
            [json_object(line, f"a JSONL line {line[:80]!r}") for line in batch[LINE]]
            if self.lines
            else batch.to_dict("records")
        )
        values = [row.get(self.text_column) for row in rows]
        # Ray Data's progress bar counts the batch when all of it is done: no meter here.
        added, _ = added_columns(self.classifier, values, self.added, self.batch_size, self.options, self.explain)
        out = [_merge(row, extra, self.added) for row, extra in zip(rows, added, strict=True)]
        if self.output_format in ("csv", "tsv"):  # one text cell per value, as the local CSV writer does
            return pd.DataFrame(out, dtype=object).map(cell_text)  # object: 14 stays 14 beside a row without text
        frame = pd.DataFrame(out)
        # pandas makes an int column with a missing value float (14.0); the local writers write 14 and null.
        frame[self.ints] = frame[self.ints].astype("Int64")
        if self.explain is not None and self.output_format == "parquet":
            return arrow_batch(frame)  # the explanation's one list-of-struct type, in every part file
        return frame


def _merge(row: dict[str, Any], extra: dict[str, Any], added: list[str]) -> dict[str, Any]:
    """The input columns (one an added column would shadow is kept as input_<name>) and the added ones."""
    out = {}
    for name, value in row.items():
        while name in added or name in out:
            name = RENAME_PREFIX + name
        out[name] = value
    return out | extra


def read_blocks(files: list[Path], actors: int) -> int:
    """How many blocks to read the input in: BLOCKS_PER_ACTOR per actor, more where they would pass BLOCK_BYTES."""
    size = sum(f.stat().st_size for f in files)
    return max(actors * BLOCKS_PER_ACTOR, math.ceil(size / BLOCK_BYTES))


def _read(files: list[Path], text_column: str, blocks: int) -> Any:
    """A Ray dataset of the input rows in `blocks` blocks; CSV and TSV cells stay strings, as the local reader reads
    them."""
    import ray.data

    fmt = file_format(files[0])
    paths = [str(f.resolve()) for f in files]
    if fmt in ("csv", "tsv"):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        with open_source(files[0], text_column) as first:
            columns = list(first.columns)
        delimiter = "\t" if fmt == "tsv" else ","
        return ray.data.read_csv(
            paths,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False
            ),
            ray_remote_args=IO_TASKS,
            override_num_blocks=blocks,
        )
    if fmt == "jsonl":
        # No rename or other map between reading and the pool: each would be a task needing a CPU of its own.
        return ray.data.read_text(paths, ray_remote_args=IO_TASKS, override_num_blocks=blocks)
    return ray.data.read_parquet(paths, ray_remote_args=IO_TASKS, override_num_blocks=blocks)


def _write(dataset: Any, folder: Path, fmt: str) -> None:
    if fmt == "parquet":
        dataset.write_parquet(str(folder), ray_remote_args=IO_TASKS)
    elif fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        delimiter = "\t" if fmt == "tsv" else ","
        # Built in the write task: pyarrow's WriteOptions do not pickle (Ray 2.60, pyarrow 25), a delimiter does.
        options = lambda: {"write_options": pacsv.WriteOptions(delimiter=delimiter)}  # noqa: E731
        dataset.write_csv(str(folder), arrow_csv_args_fn=options, ray_remote_args=IO_TASKS)
    else:
        dataset.write_json(str(folder), pandas_json_args_fn=lambda: {"force_ascii": False}, ray_remote_args=IO_TASKS)


def _counts(folder: Path, fmt: str, abstains: bool) -> tuple[int, int, int, int | None]:
    """(rows, rows without text, truncated, abstained: None where no threshold was in force) of the written folder,
    counted by Ray Data from the part files."""
    import ray.data

    paths = str(folder)
    flags = ["truncated", "abstained"] if abstains else ["truncated"]
    if fmt == "parquet":
        written = ray.data.read_parquet(paths, columns=["error", *flags])
    elif fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        delimiter = "\t" if fmt == "tsv" else ","
        written = ray.data.read_csv(
            paths,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=["error", *flags], strings_can_be_null=True),
        )
    else:  # the counted fields alone, typed: inferring every column (an explanation's, the input's) can fail
        import pyarrow as pa
        import pyarrow.json as pajson

        counted = pa.schema([("error", pa.string()), *((flag, pa.bool_()) for flag in flags)])
        parse = pajson.ParseOptions(explicit_schema=counted, unexpected_field_behavior="ignore")
        written = ray.data.read_json(paths, parse_options=parse)

    def count(batch: Any) -> dict[str, list[int]]:
        errors = batch["error"]
        without_text = int((errors.notna() & (errors != "")).sum())
        trues = {flag: [int((batch[flag].astype(str).str.lower() == "true").sum())] for flag in flags}
        return {"rows": [len(batch)], "errors": [without_text]} | trues

    totals = written.map_batches(count, batch_format="pandas").sum(["rows", "errors", *flags])
    abstained = int(totals["sum(abstained)"]) if abstains else None
    return int(totals["sum(rows)"]), int(totals["sum(errors)"]), int(totals["sum(truncated)"]), abstained


def run(
    run_dir: Path,
    input_spec: str,
    output_path: Path,
    *,
    text_column: str,
    batch_size: int = 32,
    bento: str | None = None,
    options: RayOptions | None = None,
    on_overlength: OverlengthPolicy = "truncate",
    min_confidence: float | None = None,
    target_accuracy: float | None = None,
    explain: ExplainSettings | None = None,
    **chunk_options: Any,
) -> BulkSummary:
    """Classify every row of the input file(s) on Ray Data into the folder `output_path` (committed atomically).

    `on_overlength`, the window settings in `chunk_options` (`chunk_overlap_tokens`, `chunk_aggregation`) and the
    selective settings (`min_confidence`, `target_accuracy`: an `abstained` column) and `explain` (an
    `explanation` column) are those of the local path (`textclf.bulk.local.run`).

    Everything a user can get wrong (input paths, the text column, the output name, the model) is checked here,
    before any cluster work starts.

    Raises:
        InputError: a file cannot be read or written as asked (named in the message).
        ArtifactError: the model is missing or fails its sha256 check.
        ConfigError: selective settings that are refused (as the local path refuses them).
    """
    options = options or RayOptions()
    if batch_size < 1 or options.actors < 1 or options.cpus_per_actor < 1:
        raise InputError("--batch-size, --actors and --cpus-per-actor must be at least 1")
    if on_overlength not in BULK_OVERLENGTH:
        raise InputError(f"on_overlength must be one of {', '.join(BULK_OVERLENGTH)} here, not {on_overlength!r}")
    streams = bulk_streams(options.cpus_per_actor, options.streams)
    files = input_files(input_spec)
    check_output_folder(output_path)
    for file in files:  # the text column must be in every file: a clear error now, not a failed task later
        with open_source(file, text_column):
            pass
    # Verified and resolved here first: a bad model or a refused threshold fails before any actor.
    folder = model_dir(run_dir, bento)
    model, name = _model_files(folder)
    threshold = _abstain_under(folder, min_confidence, target_accuracy)
    summary = BulkSummary(output=output_path, model=name)

    import ray

    address = options.address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here:
        # A cluster of our own (no address) listens on loopback only, and a driver joining a cluster on loopback
        # must say it is on loopback too (Ray would take the machine's own address for it and not reach its raylet).
        on_loopback = address is None or address.split("//")[-1].startswith(("127.0.0.1:", "localhost:"))
        init: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
        if on_loopback:
            init["_node_ip_address"] = "127.0.0.1"
        if address is None:  # the raylet's settings are ours to choose only on a cluster started here
            init["_system_config"] = WORKER_POOL
        ray.init(address=address, **init)
    fmt_in, fmt_out = file_format(files[0]), file_format(output_path)
    staging = output_path.with_name(f".{output_path.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    try:
        with pandas_blocks(explain is not None and fmt_out == "jsonl"):
            dataset = _read(files, text_column, read_blocks(files, options.actors)).map_batches(
                Predictor,
                fn_constructor_kwargs={
                    "model": ray.put(model),
                    "text_column": text_column,
                    "batch_size": batch_size,
                    "threads": options.cpus_per_actor,
                    "output_format": fmt_out,
                    "lines": fmt_in == "jsonl",
                    "chunking": {"on_overlength": on_overlength, **chunk_options},
                    "streams": streams,
                    "min_confidence": threshold,
                    "explain": explain,
                },
                batch_size=options.batch_rows,
                batch_format="pandas",
                concurrency=options.actors,
                num_cpus=options.cpus_per_actor,
            )
        _write(dataset, staging, fmt_out)
        summary.seconds = time.perf_counter() - started
        counts = _counts(staging, fmt_out, abstains=threshold is not None)
        summary.rows, summary.error_rows, summary.truncated, summary.abstained = counts
        summary.predicted = summary.rows - summary.error_rows
        if output_path.exists():
            retired = output_path.with_name(f".{output_path.name}.old-{os.getpid()}")
            os.replace(output_path, retired)
            os.replace(staging, output_path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if started_here:
            ray.shutdown()
    logger.debug("bulk prediction on Ray: %s", summary.line())
    return summary
