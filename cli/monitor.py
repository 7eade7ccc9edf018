"""`textclf monitor`: collected answers judged against the run's drift reference, window by window, by the service's
own tests.

It reads BentoML's data collection (the JSON lines `textclf.serving.monitoring` logs through `bentoml.monitor`, one
record a second whose columns list that second's texts: a `data.<worker>.log` file, its rotated copies, or a folder
holding them) or any output of `textclf predict` (label, score, input_tokens, and the text column, whose words it
counts). Rows go in time order where every row has a
timestamp (several workers' logs interleave), then into consecutive windows of the reference's window size, each
judged by `textclf.serving.drift.evaluate`: the same code, reference and critical values as the served gauges. A last
window short of the size shows its statistics without a verdict, as a filling served window does.
Writes monitor.md, monitor.json and monitor.png.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from textclf.artifacts.drift_reference import SIGNALS, DriftReferenceRecord
from textclf.artifacts.files import atomic_write_text
from textclf.artifacts.manifest import require_export
from textclf.bulk.tables import input_files, json_object, open_source
from textclf.config import Config
from textclf.errors import ArtifactError, InputError
from textclf.inference.confidence import ServedConfidence
from textclf.inference.predictions import MULTI_LABEL, calibrated_probabilities
from textclf.paths import ONNX_DIR
from textclf.serving.drift import DriftReference, DriftReport, WindowSnapshot, count_words, evaluate, load_reference

logger = logging.getLogger(__name__)

# BentoML's default monitor writes data.<worker>.log, rotated daily to data.<worker>.log.<date>.
_LOG_NAME = re.compile(r"^data\.\d+\.log(\..+)?$")


def _is_log(path: Path) -> bool:
    return bool(_LOG_NAME.match(path.name)) or path.suffix == ".log"


def data_files(spec: str) -> list[Path]:
    """The files `--data` names: BentoML's monitoring logs (a log, or a folder holding `data.<worker>.log` files at any
    depth), else table files (one, a folder of them, or a glob: what `textclf predict` writes).

    Raises:
        InputError: nothing readable is there.
    """
    path = Path(spec)
    if path.is_dir():
        logs = sorted(p for p in path.rglob("*") if p.is_file() and _LOG_NAME.match(p.name))
        if logs:
            return logs
    elif path.is_file() and _is_log(path):
        return [path]
    return input_files(spec)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    """A file's rows as dicts: JSON lines for a log, the table reader for a table."""
    if not _is_log(path):
        with open_source(path, None) as source:
            for chunk in source.chunks():
                yield from chunk.rows
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            yield from _texts_of(json_object(line, f"{path} line {number}"), path, number)


def _texts_of(record: dict[str, Any], path: Path, number: int) -> Iterator[dict[str, Any]]:
    """One row per text of a collected record (the service's hold their texts column-wise, a list a column)."""
    labels = record.get("label")
    if not isinstance(labels, list):
        yield record
        return
    lists = {name: value for name, value in record.items() if isinstance(value, list)}
    if any(len(value) != len(labels) for value in lists.values()):
        raise InputError(f"{path} line {number}: the record's columns list different numbers of texts")
    for i in range(len(labels)):
        yield record | {name: value[i] for name, value in lists.items()}


@dataclass
class Collected:
    """The answered texts read from the data, in the order they are judged."""

    files: list[Path]
    labels: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    input_tokens: list[int] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    timestamps: list[datetime | None] = field(default_factory=list)
    skipped: int = 0  # rows without a prediction (`textclf predict`'s rows without a text)

    @property
    def time_ordered(self) -> bool:
        return bool(self.timestamps) and all(t is not None for t in self.timestamps)


def _columns(first: dict[str, Any], path: Path, text_column: str) -> tuple[str, Callable[[dict[str, Any]], int]]:
    """The confidence column and how a row's words are counted, or an error naming every missing column."""
    confidence = "confidence" if "confidence" in first else "score"
    missing = [name for name in ("label", "input_tokens") if name not in first]
    if confidence not in first:
        missing.append("confidence (or score)")
    if "words" not in first and text_column not in first:
        missing.append(f"words (or the text column {text_column!r}, --set data.text_column=NAME)")
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; give a `textclf predict` output or BentoML's monitoring "
            f"log of textclf (its columns: {', '.join(first) or 'none'})"
        )
    if "words" in first:
        return confidence, lambda row: int(row["words"])
    return confidence, lambda row: count_words(str(row[text_column] or ""))


def _when(row: dict[str, Any]) -> datetime | None:
    """When a row's text was answered: the service's `answered_at` (epoch seconds), else a `timestamp` column."""
    answered_at = row.get("answered_at")
    if answered_at not in (None, ""):
        return datetime.fromtimestamp(float(answered_at), UTC)
    stamp = row.get("timestamp")
    return datetime.fromisoformat(stamp) if stamp else None


def read_collected(files: list[Path], labels: list[str], text_column: str) -> Collected:
    """Every answered text of `files`, in time order where every row has a `timestamp`, else in file order.

    Raises:
        InputError: a file lacks a needed column (all of them named), a value is not a number, or a label is not
            one of the model's.
    """
    label_ids = {label: i for i, label in enumerate(labels)}
    collected = Collected(files)
    for path in files:
        columns: tuple[str, Callable[[dict[str, Any]], int]] | None = None
        for number, row in enumerate(_rows(path), 1):
            if columns is None:
                columns = _columns(row, path, text_column)
            confidence_column, words_of = columns
            label = row.get("label")
            if label is None or label == "":  # a row `textclf predict` could not classify (its `error` says why)
                collected.skipped += 1
                continue
            if label not in label_ids:
                raise InputError(f"{path} row {number}: label {label!r} is not one of the model's {labels}")
            try:
                values = (float(row[confidence_column]), int(float(row["input_tokens"])), words_of(row))
                when = _when(row)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{path} row {number}: a value is not what its column holds ({exc})") from None
            collected.labels.append(label_ids[label])
            collected.confidence.append(values[0])
            collected.input_tokens.append(values[1])
            collected.words.append(values[2])
            collected.timestamps.append(when)
    if collected.time_ordered:
        stamps = [t for t in collected.timestamps if t is not None]
        try:
            order = sorted(range(len(stamps)), key=stamps.__getitem__)
        except TypeError:
            raise InputError(f"{files[0]}: timestamps with and without a time zone; give one kind") from None
        for name in ("labels", "confidence", "input_tokens", "words", "timestamps"):
            values_list = getattr(collected, name)
            setattr(collected, name, [values_list[i] for i in order])
    return collected


@dataclass(frozen=True)
class Judged:
    """One window of collected texts and the service's report on it."""

    index: int
    first_text: int  # 1-based positions in the judged order
    last_text: int
    start: str | None
    end: str | None
    report: DriftReport

    def as_dict(self) -> dict[str, Any]:
        head = {k: getattr(self, k) for k in ("index", "first_text", "last_text", "start", "end")}
        return head | self.report.as_dict()


def judge(collected: Collected, reference: DriftReference) -> list[Judged]:
    """Consecutive windows of `reference.window` texts, each evaluated as a served window is."""
    size = reference.window
    arrays = (
        np.asarray(collected.labels, dtype=np.int64),
        np.asarray(collected.confidence, dtype=np.float64),
        np.asarray(collected.input_tokens, dtype=np.int64),
        np.asarray(collected.words, dtype=np.int64),
    )
    judged = []
    for index, start in enumerate(range(0, len(collected.labels), size), 1):
        end = min(start + size, len(collected.labels))
        snapshot = WindowSnapshot(size, end, *(a[start:end] for a in arrays))
        first, last = collected.timestamps[start], collected.timestamps[end - 1]
        start_at = first.isoformat() if first is not None else None
        end_at = last.isoformat() if last is not None else None
        judged.append(Judged(index, start + 1, end, start_at, end_at, evaluate(snapshot, reference)))
    return judged


def _reference(cfg: Config) -> tuple[str, DriftReferenceRecord, DriftReference, list[str]]:
    """The variant the service would serve (serve.variant, else export's choice), its reference record, the prepared
    reference (confidence with the variant's own calibration) and the labels."""
    export = require_export(cfg.run_dir)
    name = cfg.serve.variant or export.serving_variant
    record = export.variants.get(name) if name else None
    if name is None or record is None or not record.passed:
        raise ArtifactError(f"{cfg.run_dir}: no passing variant {name!r} to judge against (serve.variant)")
    if record.drift_reference is None:
        raise ArtifactError(
            f"{cfg.run_dir}: variant {name} has no drift reference (exported before textclf wrote one); export again"
        )
    multi_label = export.problem_type == MULTI_LABEL
    served = ServedConfidence.load(record.confidence, export.label_names, multi_label, variant=name)
    reference = load_reference(
        cfg.run_dir / ONNX_DIR / name,
        record.drift_reference,
        lambda logits: calibrated_probabilities(logits, served.temperature, multi_label),
    )
    assert reference is not None  # a record was given
    return name, record.drift_reference, reference, export.label_names


def _score(judged: Judged, signal: str) -> str:
    score = judged.report.signals[signal].score
    if score is None:
        return "–"
    return f"**{score:.2f}**" if score > 1 else f"{score:.2f}"


def markdown(summary: dict[str, Any], judged: list[Judged]) -> str:
    """monitor.md: what was read, the reference, one row per window, the first alarm."""
    ref = summary["reference"]
    critical = ", ".join(f"{s} {v:.4g}" for s, v in ref["critical_values"].items())
    order = "in time order" if summary["time_ordered"] else "in file order (not every row has a timestamp)"
    lines = [
        f"# Drift of collected answers: run `{summary['run']}`, variant `{summary['variant']}`",
        "",
        f"Data: {', '.join(f'`{f}`' for f in summary['data'])}: {summary['texts']:,} answered texts {order}"
        f" ({summary['skipped_rows']:,} rows without a prediction skipped).",
        f"Reference: {ref['texts']:,} test texts; window {ref['window']:,} texts; family-wise false-alarm level "
        f"{ref['level']:.0%} over the four signals; critical values {critical}; estimated accuracy "
        f"{ref['estimated_accuracy']:.3f}.",
        "",
        "Scores are statistic ÷ critical value (over 1, in bold: drift); a last window short of "
        f"{ref['window']:,} texts has statistics but no verdict. Estimated accuracy is the mean confidence: the "
        "accuracy the model expects of itself without labels, biased when the label mix moves.",
        "",
        f"| window | texts | from | to | {' | '.join(SIGNALS)} | alarm | estimated accuracy |",
        f"|---|---|---|---|{'---|' * len(SIGNALS)}---|---|",
    ]
    for j in judged:
        accuracy = j.report.estimated_accuracy
        cells = [
            str(j.index),
            f"{j.first_text:,}–{j.last_text:,}",
            j.start or "–",
            j.end or "–",
            *(_score(j, s) for s in SIGNALS),
            "**yes**" if j.report.alarm else "no",
            f"{accuracy:.3f}" if accuracy is not None else "–",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    first = summary["first_alarm"]
    verdict = "No window raised the alarm."
    if first:
        verdict = f"First alarm: window {first['window']}, after {first['after_texts']:,} texts, on "
        verdict += ", ".join(first["signals"]) + "."
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


def plot(judged: list[Judged], reference_accuracy: float, path: Path) -> None:
    """monitor.png: each signal's score per window (the alarm line at 1) and the estimated accuracy per window."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("the PNG needs matplotlib (the bench extra: pip install -e '.[bench]')") from None
    x = [j.index for j in judged]
    fig, (scores, accuracy) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for signal in SIGNALS:
        values = [np.nan if (s := j.report.signals[signal].score) is None else s for j in judged]
        scores.plot(x, values, marker="o", label=signal)
    scores.axhline(1.0, color="red", linestyle="--", linewidth=1, label="alarm (critical value)")
    scores.set_ylabel("statistic / critical value")
    scores.legend(fontsize=8)
    estimated = [np.nan if j.report.estimated_accuracy is None else j.report.estimated_accuracy for j in judged]
    accuracy.plot(x, estimated, marker="o", label="window")
    accuracy.axhline(reference_accuracy, color="gray", linestyle="--", linewidth=1, label="reference")
    accuracy.set_ylabel("estimated accuracy")
    accuracy.set_xlabel("window")
    accuracy.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(cfg: Config, data: str, out_dir: Path | None = None) -> str:
    """Judge the collected answers at `data` against the run's reference; write monitor.md, .json and .png.

    Returns:
        A one-line summary naming the output folder.

    Raises:
        ArtifactError: the run has no export, or its variant no drift reference.
        InputError: the data cannot be read, or lacks a needed column (named).
    """
    name, record, reference, labels = _reference(cfg)
    files = data_files(data)
    collected = read_collected(files, labels, cfg.data.text_column)
    if not collected.labels:
        raise InputError(f"{data}: no answered text to judge ({collected.skipped:,} rows without a prediction)")
    judged = judge(collected, reference)
    alarms = [j for j in judged if j.report.alarm]
    first = alarms[0] if alarms else None
    summary: dict[str, Any] = {
        "run": cfg.run,
        "variant": name,
        "data": [str(f) for f in files],
        "texts": len(collected.labels),
        "skipped_rows": collected.skipped,
        "time_ordered": collected.time_ordered,
        "reference": {
            "texts": record.texts,
            "window": record.window,
            "level": record.level,
            "critical_values": record.critical_values,
            "estimated_accuracy": reference.estimated_accuracy,
        },
        "windows": [j.as_dict() for j in judged],
        "alarms": len(alarms),
        "first_alarm": None
        if first is None
        else {
            "window": first.index,
            "after_texts": first.last_text,
            "signals": [s for s, r in first.report.signals.items() if r.score is not None and r.score > 1],
        },
    }
    out = out_dir or cfg.reports_root / cfg.run / "monitor"
    atomic_write_text(out / "monitor.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "monitor.md", markdown(summary, judged))
    plot(judged, reference.estimated_accuracy, out / "monitor.png")
    full = sum(1 for j in judged if j.report.texts == reference.window)
    return (
        f"{len(collected.labels):,} texts, {full} full window(s) of {reference.window:,}: {len(alarms)} alarm(s)"
        f"{f' (first after {first.last_text:,} texts)' if first else ''} → {out}"
    )
