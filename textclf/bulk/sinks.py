"""Output tables written atomically: every input column (renamed where a prediction column takes its name) plus
the added prediction columns, as CSV, TSV, JSONL or Parquet by the output's extension.

A writer fills a hidden temporary file beside its target and renames it over the target only once every row is
written: an interrupted or failed run leaves no half-written file (and an older file of that name unchanged).
pyarrow is needed for Parquet only, and imported there.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from textclf.bulk.tables import Chunk, Source, file_format, pyarrow_modules
from textclf.errors import InputError

logger = logging.getLogger(__name__)

RENAME_PREFIX: Final = "input_"  # an input column whose name an added column takes is kept under this prefix


@dataclass(frozen=True)
class Column:
    """A column a writer appends to every row."""

    name: str
    kind: Literal["string", "float", "int", "bool", "map", "strings", "explanation"]
    keys: tuple[str, ...] = ()  # a map's keys, in order (a Parquet struct's fields)


def explanation_type(pa: Any) -> Any:
    """An `explanation` column's Parquet type: a list of one struct a word, its label beside it (a struct of the
    labels would hold a field per label; this keeps one schema whatever labels a row explains)."""
    word = [("label", pa.string()), ("start", pa.int64()), ("end", pa.int64())]
    return pa.list_(pa.struct([*word, ("word", pa.string()), ("weight", pa.float64())]))


def explanation_structs(value: dict[str, list[dict[str, Any]]] | None) -> list[dict[str, Any]] | None:
    """An explanation `{label: [{start, end, word, weight}, ...]}` as `explanation_type` rows, label by label in the
    explanation's order, each label's words strongest first as they come; None (a row without text) stays None."""
    if value is None or (isinstance(value, float) and value != value):  # pandas' NaN for a missing cell
        return None
    return [{"label": label, **word} for label, words in value.items() for word in words]


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


def cell_text(value: Any) -> str:
    """One value as a CSV / TSV cell: empty for a missing one, JSON for a bool, object or list."""
    if value is None or (isinstance(value, float) and value != value):  # None, or pandas' NaN for a missing cell
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
            self._writer.writerow([cell_text(row.get(c)) for c in self.columns] + [cell_text(extra[n]) for n in names])

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
        self._pa, self._pq = pyarrow_modules(path)
        self._writer: Any = None
        self._schema: Any = None

    def _added_type(self, column: Column) -> Any:
        pa = self._pa
        if column.kind == "map":
            return pa.struct([(key, pa.float64()) for key in column.keys])
        if column.kind == "strings":
            return pa.list_(pa.string())
        if column.kind == "explanation":
            return explanation_type(pa)
        return {"string": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}[column.kind]

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
        for field, column in zip(outputs, self.added, strict=True):
            values = [v[field.name] for v in added]
            if column.kind == "explanation":
                values = [explanation_structs(value) for value in values]
            arrays.append(self._array(values, field.type, field.name, chunk.first_row, count))
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
