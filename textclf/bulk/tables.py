"""Tabular input files read a chunk at a time: CSV, TSV, JSONL and Parquet (by extension), the one table of the
file types textclf reads, and the files an input names (a file, a folder of them, a glob). Readers stream, so memory
stays flat in a file's size; pyarrow is needed for Parquet only, and imported there. The writers are in
`textclf.bulk.sinks`.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from textclf.errors import InputError

logger = logging.getLogger(__name__)

# The one table of file types textclf reads, for training data and bulk prediction alike (`.json` is read as JSON
# Lines, one object per line, as the `datasets` JSON builder training used to read it).
FORMATS: Final[dict[str, str]] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
CHUNK_ROWS: Final = 4096
_CSV_FIELD_LIMIT: Final = 2**31 - 1  # the csv module's default (128 KiB) would refuse a long review


def file_format(path: Path) -> str:
    """The format a file's extension names: csv, tsv, jsonl or parquet.

    Raises:
        InputError: the extension is none of them.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        suffix = repr(path.suffix) if path.suffix else "no extension"
        raise InputError(f"{path}: unknown file type ({suffix}); use one of {', '.join(FORMATS)}")
    return fmt


def input_files(spec: str) -> list[Path]:
    """The files a `--input` names: one file, a folder (its files of known types), or a glob pattern.

    Raises:
        InputError: nothing matches, a file's type is unknown, or the files mix types.
    """
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FORMATS)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
    if not files:
        raise InputError(f"{spec}: no input file (a file, a folder of .csv/.tsv/.jsonl/.parquet files, or a glob)")
    formats = {file_format(f) for f in files}
    if len(formats) > 1:
        raise InputError(f"{spec}: files of several types ({', '.join(sorted(formats))}); give one type")
    return files


def json_object(line: str | bytes, where: str) -> dict[str, Any]:
    """One JSON-lines row, or an error that says `where` it stands (a file and line, or the line itself)."""
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def pyarrow_modules(path: Path) -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: Parquet needs pyarrow (pip install pyarrow, or the train extra)") from None
    return pa, pq


def _unique(names: Sequence[str], path: Path) -> list[str]:
    seen: set[str] = set()
    duplicates: set[str] = set()
    for name in names:
        (duplicates if name in seen else seen).add(name)
    if duplicates:
        raise InputError(f"{path}: duplicate column names {sorted(duplicates)}")
    return list(names)


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of a file, each a `{column: value}` dict."""

    rows: list[dict[str, Any]]
    first_row: int  # 1-based number of rows[0] in the file; a header line is not a row
    done: int  # progress so far, in the source's units (bytes read or rows read)


class Source:
    """An open input file: its columns and its rows, a chunk at a time."""

    def __init__(self, path: Path, fmt: str, chunk_rows: int) -> None:
        self.path = path
        self.format = fmt
        self.chunk_rows = chunk_rows
        self.columns: list[str] = []
        self.total = 0  # progress units of the whole file: bytes (CSV, TSV, JSONL) or rows (Parquet)
        self.arrow_schema: Any = None  # Parquet only: the input's column types, kept in a Parquet output

    def chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError

    def check_text_column(self, name: str) -> None:
        """Raise an InputError listing the columns when `name` is not one of them."""
        if name not in self.columns:
            listed = ", ".join(repr(c) for c in self.columns) or "none"
            raise InputError(f"{self.path}: no column {name!r} (--text-column); its columns: {listed}")

    def close(self) -> None:
        """Release the file."""


class _CsvSource(Source):
    def __init__(self, path: Path, fmt: str, chunk_rows: int) -> None:
        super().__init__(path, fmt, chunk_rows)
        csv.field_size_limit(_CSV_FIELD_LIMIT)
        self._raw = path.open("rb")
        text = io.TextIOWrapper(self._raw, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",")
        self.total = path.stat().st_size
        try:
            header = self._next()
            if header is None:
                raise InputError(f"{path}: empty file; expected a header row naming the columns")
            self.columns = _unique(header, path)
        except BaseException:
            self.close()
            raise

    def _next(self) -> list[str] | None:
        try:
            return next(self._reader, None)
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
        except csv.Error as exc:
            raise InputError(f"{self.path} line {self._reader.line_num}: {exc}") from None

    def chunks(self) -> Iterator[Chunk]:
        width = len(self.columns)
        rows: list[dict[str, Any]] = []
        first = number = 1
        while (fields := self._next()) is not None:
            if not fields:  # a blank line is no row
                continue
            if len(fields) > width:
                raise InputError(
                    f"{self.path} row {number} (line {self._reader.line_num}): {len(fields)} fields, "
                    f"but the header names {width} columns"
                )
            row: dict[str, Any] = dict(zip(self.columns, fields, strict=False))
            for name in self.columns[len(fields) :]:
                row[name] = None  # a short row: its last columns are missing
            rows.append(row)
            number += 1
            if len(rows) == self.chunk_rows:
                yield Chunk(rows, first, self._raw.tell())
                first, rows = number, []
        if rows:
            yield Chunk(rows, first, self.total)

    def close(self) -> None:
        self._raw.close()


class _JsonlSource(Source):
    """One JSON object a line; the columns are the keys of the first chunk's objects, in order of appearance."""

    def __init__(self, path: Path, fmt: str, chunk_rows: int) -> None:
        super().__init__(path, fmt, chunk_rows)
        self._handle = path.open("rb")
        self._line = 0
        self.total = path.stat().st_size
        try:
            self._first = self._read()
        except BaseException:
            self.close()
            raise
        self.columns = list(dict.fromkeys(key for row in self._first for key in row))

    def _read(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for line in self._handle:
            self._line += 1
            if not line.strip():
                continue
            rows.append(json_object(line, f"{self.path} line {self._line}"))
            if len(rows) == self.chunk_rows:
                break
        return rows

    def check_text_column(self, name: str) -> None:
        if self._first:  # an empty file has no columns to check
            super().check_text_column(name)

    def chunks(self) -> Iterator[Chunk]:
        rows, first = self._first, 1
        while rows:
            yield Chunk(rows, first, self._handle.tell())
            first += len(rows)
            rows = self._read()

    def close(self) -> None:
        self._handle.close()


class _ParquetSource(Source):
    def __init__(self, path: Path, fmt: str, chunk_rows: int) -> None:
        super().__init__(path, fmt, chunk_rows)
        self._pa, pq = pyarrow_modules(path)
        try:
            self._file = pq.ParquetFile(path)
        except (self._pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
        self.arrow_schema = self._file.schema_arrow
        self.columns = _unique(self.arrow_schema.names, path)
        self.total = self._file.metadata.num_rows

    def check_text_column(self, name: str) -> None:
        super().check_text_column(name)
        types = self._pa.types
        kind = self.arrow_schema.field(name).type
        value_kind = kind.value_type if types.is_dictionary(kind) else kind
        if not (types.is_string(value_kind) or types.is_large_string(value_kind)):
            raise InputError(f"{self.path}: column {name!r} holds {kind}, not text")

    def chunks(self) -> Iterator[Chunk]:
        first = 1
        for batch in self._file.iter_batches(batch_size=self.chunk_rows):
            rows = batch.to_pylist()
            yield Chunk(rows, first, first - 1 + len(rows))
            first += len(rows)

    def close(self) -> None:
        self._file.close()


_SOURCES: Final[dict[str, type[Source]]] = {
    "csv": _CsvSource,
    "tsv": _CsvSource,
    "jsonl": _JsonlSource,
    "parquet": _ParquetSource,
}


@contextlib.contextmanager
def open_source(path: Path, text_column: str | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[Source]:
    """Open an input file by its extension and check that it has `text_column` (None: a reader checks its own).

    Raises:
        InputError: an unknown extension, a missing file, no such column, or a file that is not of its format.
    """
    fmt = file_format(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    source = _SOURCES[fmt](path, fmt, chunk_rows)
    try:
        if text_column is not None:
            source.check_text_column(text_column)
        yield source
    finally:
        source.close()
