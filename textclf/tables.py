"""Tabular files read a chunk at a time and written atomically: CSV, TSV, JSONL and Parquet (by extension).

Readers stream, so memory stays flat in a file's size. A writer fills a hidden temporary file beside its target
and renames it over the target only once every row is written: an interrupted or failed run leaves no
half-written file (and an older file of that name unchanged). pyarrow is needed for Parquet only, and imported
there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

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
RENAME_PREFIX: Final = "input_"  # an input column whose name an added column takes is kept under this prefix
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


def _pyarrow(path: Path) -> tuple[Any, Any]:
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
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{self.path} line {self._line}: not valid JSON ({exc})") from None
            if not isinstance(value, dict):
                raise InputError(f"{self.path} line {self._line}: expected a JSON object, got {type(value).__name__}")
            rows.append(value)
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
        self._pa, pq = _pyarrow(path)
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
def open_source(path: Path, text_column: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[Source]:
    """Open an input file by its extension and check that it has `text_column`.

    Raises:
        InputError: an unknown extension, a missing file, no such column, or a file that is not of its format.
    """
    fmt = file_format(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    source = _SOURCES[fmt](path, fmt, chunk_rows)
    try:
        source.check_text_column(text_column)
        yield source
    finally:
        source.close()


@dataclass(frozen=True)
class Column:
    """A column a writer appends to every row."""

    name: str
    kind: Literal["string", "float", "bool", "map", "strings"]
    keys: tuple[str, ...] = ()  # a map's keys, in order (a Parquet struct's fields)


class Sink:
    """A temporary output file: every input column (renamed where an added column takes its name) + the added."""

    def __init__(self, path: Path, tmp: Path, source: Source, added: Sequence[Column]) -> None:
        self.path = path
        self.tmp = tmp
        self.source = source
        self.added = list(added)
        self._added_names = {c.name for c in added}
        self.columns = list(source.columns)
        self._known = set(self.columns)
        self._check_keys = source.format == "jsonl"  # only JSONL rows may bring columns the first chunk lacked
        self.renamed: dict[str, str] = {}
        for name in self.columns:
            self.out_name(name)

    def out_name(self, name: str) -> str:
        """The output column of an input column."""
        if name not in self._added_names:
            return name
        if name not in self.renamed:
            taken = self._known | self._added_names | set(self.renamed.values())
            new = RENAME_PREFIX + name
            while new in taken:
                new = RENAME_PREFIX + new
            self.renamed[name] = new
            logger.warning("input column %r is written as %r: the prediction takes its name", name, new)
        return self.renamed[name]

    def header(self) -> list[str]:
        return [self.out_name(c) for c in self.columns] + [c.name for c in self.added]

    def check_keys(self, row: dict[str, Any], number: int) -> None:
        """A fixed-column output cannot take a JSONL key first seen after the first chunk."""
        if self._check_keys and not row.keys() <= self._known:
            late = next(k for k in row if k not in self._known)
            raise InputError(
                f"{self.source.path} row {number}: key {late!r} is not in the first {self.source.chunk_rows} rows, "
                f"and a {file_format(self.path)} file fixes its columns up front; write JSONL instead"
            )

    def write(self, chunk: Chunk, added: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file (every row written)."""

    def abort(self) -> None:
        """Release the file after a failure; the caller removes it."""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


class _CsvSink(Sink):
    def __init__(self, path: Path, tmp: Path, source: Source, added: Sequence[Column]) -> None:
        super().__init__(path, tmp, source, added)
        self._handle = tmp.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle, delimiter="\t" if file_format(path) == "tsv" else ",")
        self._writer.writerow(self.header())

    def write(self, chunk: Chunk, added: list[dict[str, Any]]) -> None:
        names = [c.name for c in self.added]
        for number, (row, extra) in enumerate(zip(chunk.rows, added, strict=True), start=chunk.first_row):
            self.check_keys(row, number)
            self._writer.writerow([_cell(row.get(c)) for c in self.columns] + [_cell(extra[n]) for n in names])

    def close(self) -> None:
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()


class _JsonlSink(Sink):
    def __init__(self, path: Path, tmp: Path, source: Source, added: Sequence[Column]) -> None:
        super().__init__(path, tmp, source, added)
        self._handle = tmp.open("wb")

    def write(self, chunk: Chunk, added: list[dict[str, Any]]) -> None:
        lines = []
        for row, extra in zip(chunk.rows, added, strict=True):
            record = {self.out_name(k): v for k, v in row.items()}
            record.update(extra)
            lines.append(json.dumps(record, ensure_ascii=False, default=str))
        if lines:
            self._handle.write(("\n".join(lines) + "\n").encode("utf-8"))

    def close(self) -> None:
        self._handle.close()

    def abort(self) -> None:
        self._handle.close()


class _ParquetSink(Sink):
    """One row group a chunk. Input column types come from a Parquet input, else from the first chunk."""

    def __init__(self, path: Path, tmp: Path, source: Source, added: Sequence[Column]) -> None:
        super().__init__(path, tmp, source, added)
        self._pa, self._pq = _pyarrow(path)
        self._writer: Any = None
        self._schema: Any = None

    def _added_type(self, column: Column) -> Any:
        pa = self._pa
        if column.kind == "map":
            return pa.struct([(key, pa.float64()) for key in column.keys])
        if column.kind == "strings":
            return pa.list_(pa.string())
        return {"string": pa.string(), "float": pa.float64(), "bool": pa.bool_()}[column.kind]

    def _input_type(self, name: str, rows: list[dict[str, Any]]) -> Any:
        pa = self._pa
        if self.source.arrow_schema is not None:
            return self.source.arrow_schema.field(name).type
        if self.source.format in ("csv", "tsv"):
            return pa.string()
        kind = self._array([r.get(name) for r in rows], None, name, 1, len(rows)).type
        return pa.string() if pa.types.is_null(kind) else kind

    def _array(self, values: list[Any], kind: Any, name: str, first: int, count: int) -> Any:
        try:
            return self._pa.array(values, type=kind)
        except (self._pa.ArrowException, OverflowError) as exc:
            where = f"type {kind} taken from the first rows" if kind is not None else "one Parquet type"
            raise InputError(
                f"{self.source.path} rows {first}-{first + count - 1}: column {name!r} does not fit {where} "
                f"({exc}); write JSONL instead"
            ) from None

    def _open(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pa
        fields = [pa.field(self.out_name(c), self._input_type(c, rows)) for c in self.columns]
        fields += [pa.field(c.name, self._added_type(c)) for c in self.added]
        self._schema = pa.schema(fields)
        self._writer = self._pq.ParquetWriter(str(self.tmp), self._schema)

    def write(self, chunk: Chunk, added: list[dict[str, Any]]) -> None:
        if self._writer is None:
            self._open(chunk.rows)
        for number, row in enumerate(chunk.rows, start=chunk.first_row):
            self.check_keys(row, number)
        count = len(chunk.rows)
        fields = list(self._schema)
        inputs, outputs = fields[: len(self.columns)], fields[len(self.columns) :]
        arrays = [
            self._array([r.get(name) for r in chunk.rows], field.type, name, chunk.first_row, count)
            for field, name in zip(inputs, self.columns, strict=True)
        ]
        arrays += [
            self._array([v[field.name] for v in added], field.type, field.name, chunk.first_row, count)
            for field in outputs
        ]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> None:
        if self._writer is None:  # no rows: still a valid file with the columns
            self._open([])
        self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


_SINKS: Final[dict[str, type[Sink]]] = {"csv": _CsvSink, "tsv": _CsvSink, "jsonl": _JsonlSink, "parquet": _ParquetSink}


def check_output(path: Path) -> None:
    """Refuse an output path before any work: an unknown extension, or a folder in the way.

    Raises:
        InputError: naming the path.
    """
    file_format(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the output file's name")


@contextlib.contextmanager
def open_sink(path: Path, source: Source, added: Sequence[Column]) -> Iterator[Sink]:
    """A writer of `path` (format by extension) that fills a hidden temporary file in the same folder.

    On a clean exit the file is finished, synced and renamed over `path`; on any failure it is removed.
    """
    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    sink: Sink | None = None
    try:
        sink = _SINKS[file_format(path)](path, tmp, source, added)
        yield sink
        sink.close()
        sink = None
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if sink is not None:
            sink.abort()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
