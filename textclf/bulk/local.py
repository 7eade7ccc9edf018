"""Bulk prediction: every row of a CSV, TSV, JSONL or Parquet file classified into a new file.

The input streams in chunks (`textclf.bulk.tables`), so memory stays flat in the file's size. Each chunk's texts go to
the torch-free runtime, which sorts them by token length and runs calls of `batch_size` texts, so a call pads only
to its own longest text. A row without a text (empty, whitespace only, missing, not a string) fails nothing: it
gets an `error` and no prediction, and the summary counts it. With `on_overlength="chunk"` a long text is read in
windows of max_seq_len tokens (`textclf.inference.windows`), sorted and batched among the other texts' windows, and a
`chunks` column says how many each row took. Scores are the served variant's calibrated ones; with a selective
threshold in force (`min_confidence` or `target_accuracy`, as `serve.*` sets them for the service), an `abstained`
column says which answers fell under it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from textclf.bulk.explained import ExplainSettings
from textclf.bulk.rows import added_columns, columns_of
from textclf.bulk.sinks import check_output, open_sink
from textclf.bulk.tables import CHUNK_ROWS, Chunk, Source, open_source
from textclf.errors import ArtifactError, InputError
from textclf.inference.runtime import Classifier, default_intra_op_threads
from textclf.inference.text_options import DEFAULT_OPTIONS, OverlengthPolicy, TextOptions

logger = logging.getLogger(__name__)

SHOWN_ERROR_ROWS: Final = 5  # row numbers the summary names
# A file's long texts are cut or read in windows; `error` would fail a whole file for one row.
BULK_OVERLENGTH: Final = ("truncate", "chunk")


@dataclass(frozen=True)
class BulkProgress:
    done: int  # in the input's units: bytes read (CSV, TSV, JSONL) or rows read (Parquet)
    total: int
    rows: int
    predicted: int
    seconds: float


ProgressFn = Callable[[BulkProgress], None]


@dataclass
class BulkSummary:
    """What one bulk prediction did; `line()` is the one-line summary."""

    output: Path
    model: str
    rows: int = 0
    predicted: int = 0
    truncated: int = 0
    abstained: int | None = None  # answers under the selective threshold; None: no threshold in force
    error_rows: int = 0
    first_error_rows: list[int] = field(default_factory=list)  # 1-based row numbers (a header is no row)
    renamed: dict[str, str] = field(default_factory=dict)  # input columns written under another name
    seconds: float = 0.0  # reading, predicting and writing; loading the model is not counted

    @property
    def texts_per_s(self) -> float:
        return self.predicted / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        without = f"{self.error_rows:,} without text"
        if self.first_error_rows:  # Ray counts the rows without text but does not number them
            shown = ", ".join(str(n) for n in self.first_error_rows)
            more = ", …" if self.error_rows > len(self.first_error_rows) else ""
            without += f" (row {shown}{more})"
        abstained = f", {self.abstained:,} abstained" if self.abstained is not None else ""
        return (
            f"{self.rows:,} rows: {self.predicted:,} predicted{abstained}, {without}, {self.truncated:,} truncated; "
            f"{self.seconds:.1f} s, {self.texts_per_s:,.0f} texts/s → {self.output}"
        )


def bulk_streams(threads: int | None, streams: int | None = None) -> int:
    """Engine copies for bulk prediction on `threads` intra-op threads (default: the usable cores): `streams` where
    given, else one a thread (`textclf.inference.streams`: side by side, one thread each, they keep more of the cores
    busy).

    Raises:
        InputError: `streams` below 1 or above the threads (a copy needs a thread of its own).
    """
    threads = threads or default_intra_op_threads()
    if streams is None:
        return threads
    if not 1 <= streams <= threads:
        raise InputError(f"--streams {streams}: give 1 to {threads} (the intra-op threads; a stream needs one)")
    return streams


def model_dir(run_dir: Path, bento: str | None) -> Path:
    """The folder to load: the run's, or a BentoML model store entry's (it mirrors a run folder).

    Raises:
        ArtifactError: BentoML is missing, or the store has no such model.
    """
    if bento is None:
        return run_dir
    try:
        import bentoml
        from bentoml.exceptions import BentoMLException, NotFound
    except ImportError:
        raise ArtifactError("a model from the BentoML store needs bentoml (the serve extra)") from None
    try:
        return Path(bentoml.models.get(bento).path)
    except NotFound:
        raise ArtifactError(
            f"model {bento!r} is not in the BentoML model store; `textclf build --model-only` imports a run"
        ) from None
    except BentoMLException as exc:
        raise ArtifactError(f"model {bento!r}: {exc}") from None


def _predict_chunk(
    classifier: Classifier,
    chunk: Chunk,
    text_column: str,
    batch_size: int,
    summary: BulkSummary,
    meter: _Meter,
    options: TextOptions = DEFAULT_OPTIONS,
    explain: ExplainSettings | None = None,
) -> list[dict[str, Any]]:
    """The added columns of each row of a chunk, in order; counts into `summary`."""
    names = [column.name for column in columns_of(classifier, options, explain)]
    values = [row.get(text_column) for row in chunk.rows]
    added, predictions = added_columns(classifier, values, names, batch_size, options, explain, meter)
    for offset, row in enumerate(added):
        if row["error"] is not None:
            summary.error_rows += 1
            if len(summary.first_error_rows) < SHOWN_ERROR_ROWS:
                summary.first_error_rows.append(chunk.first_row + offset)
    for prediction in predictions:
        summary.truncated += prediction.truncated
        if prediction.abstained is not None:
            summary.abstained = (summary.abstained or 0) + prediction.abstained
    summary.rows += len(chunk.rows)
    return added


class _Meter:
    """Counts predicted texts into the summary and reports progress, inside a chunk by its share of the texts scored
    (one a row, and explaining's, `expect`ed up front)."""

    def __init__(self, summary: BulkSummary, total: int, progress: ProgressFn | None) -> None:
        self.summary = summary
        self.total = total
        self.progress = progress
        self.started = time.perf_counter()
        self.done = 0  # progress units of the finished chunks
        self.chunk_done = 0
        self.chunk_work = 1
        self.chunk_scored = 0

    def begin(self, chunk: Chunk) -> None:
        self.chunk_done, self.chunk_work, self.chunk_scored = chunk.done, max(1, len(chunk.rows)), 0

    def expect(self, texts: int) -> None:
        """This chunk scores `texts` more texts than its rows (an explanation's)."""
        self.chunk_work += texts

    def step(self, texts: int) -> None:
        self.summary.predicted += texts
        self.work(texts)

    def work(self, texts: int) -> None:
        self.chunk_scored += texts
        self.report(self.done + (self.chunk_done - self.done) * self.chunk_scored // self.chunk_work)

    def end(self) -> None:
        self.done = self.chunk_done
        self.report(self.done)

    def report(self, position: int) -> None:
        summary = self.summary
        summary.seconds = time.perf_counter() - self.started
        if self.progress is not None:
            self.progress(BulkProgress(position, self.total, summary.rows, summary.predicted, summary.seconds))


def predict_source(
    classifier: Classifier,
    source: Source,
    output: Path,
    *,
    text_column: str,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    options: TextOptions = DEFAULT_OPTIONS,
    explain: ExplainSettings | None = None,
) -> BulkSummary:
    """Classify every row of an open source into `output` (written atomically), texts tokenized as `options` say,
    each prediction explained where `explain` says how (`textclf.bulk.explained`)."""
    summary = BulkSummary(output=output, model=f"{classifier.variant} {classifier.model_sha256 or ''}".strip())
    if classifier.selective_threshold is not None:
        summary.abstained = 0  # counted even where no answer abstains
    meter = _Meter(summary, source.total, progress)
    with open_sink(output, source, columns_of(classifier, options, explain)) as sink:
        for chunk in source.chunks():
            meter.begin(chunk)
            added = _predict_chunk(classifier, chunk, text_column, batch_size, summary, meter, options, explain)
            sink.write(chunk, added)
            meter.end()
        summary.renamed = dict(sink.renamed)
    summary.seconds = time.perf_counter() - meter.started
    logger.debug("bulk prediction: %s", summary.line())
    return summary


def run(
    run_dir: Path,
    input_path: Path,
    output_path: Path,
    *,
    text_column: str,
    batch_size: int = 32,
    bento: str | None = None,
    progress: ProgressFn | None = None,
    chunk_rows: int = CHUNK_ROWS,
    on_overlength: OverlengthPolicy = "truncate",
    min_confidence: float | None = None,
    target_accuracy: float | None = None,
    explain: ExplainSettings | None = None,
    **classifier_options: Any,
) -> BulkSummary:
    """Classify every row of `input_path` with the run's serving variant (or a BentoML store model) into
    `output_path`; each file's format comes from its extension (csv, tsv, jsonl, parquet).

    Args:
        run_dir: the run's artifact folder (ignored when `bento` is given).
        input_path: the rows to classify.
        output_path: every input column, plus label, score, scores, truncated, (chunk) chunks and error.
        text_column: the input column that holds the texts.
        batch_size: texts per ONNX call (the texts of a chunk are sorted by token length first).
        bento: a BentoML model tag to load instead of the run folder.
        progress: called after each chunk.
        chunk_rows: rows read at a time; memory grows with this, not with the file.
        on_overlength: texts over max_seq_len tokens are cut (`truncate`) or read in windows (`chunk`, shaped by
            `chunk_overlap_tokens` and `chunk_aggregation` among `classifier_options`); `error` is a server's policy.
        min_confidence: answers whose top probability is under this get `abstained` true (an `abstained` column).
        target_accuracy: instead, the threshold whose validation accuracy reaches this (the variant's recorded
            curve); resolved when the model loads, before any row is read.
        explain: add an `explanation` column, each prediction's strongest words (`textclf.bulk.explained`).
        classifier_options: passed to `Classifier` (threads, providers, chunk settings); `streams` defaults to
            one engine copy per intra-op thread (`bulk_streams`).

    Raises:
        InputError: a file cannot be read or written as asked (named in the message).
        ArtifactError: the model is missing or fails its sha256 check.
        ConfigError: both selective settings, either for a multi-label model, or a target no threshold reaches.
    """
    if batch_size < 1 or chunk_rows < 1:
        raise InputError(f"batch_size and chunk_rows must be at least 1, not {batch_size} and {chunk_rows}")
    if on_overlength not in BULK_OVERLENGTH:
        raise InputError(f"on_overlength must be one of {', '.join(BULK_OVERLENGTH)} here, not {on_overlength!r}")
    check_output(output_path)  # a bad output name fails before any reading or model loading
    with open_source(input_path, text_column, max(chunk_rows, batch_size)) as source:
        streams = bulk_streams(classifier_options.get("intra_op_threads"), classifier_options.pop("streams", None))
        classifier = Classifier.from_run(
            model_dir(run_dir, bento),
            streams=streams,
            min_confidence=min_confidence,
            target_accuracy=target_accuracy,
            **classifier_options,
        )
        return predict_source(
            classifier,
            source,
            output_path,
            text_column=text_column,
            batch_size=batch_size,
            progress=progress,
            options=TextOptions(on_overlength=on_overlength),
            explain=explain,
        )
