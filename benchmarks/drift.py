"""`textclf bench-drift` into drift.json: does the served drift monitor notice what it should, and at what cost?

The run's Bento, one worker (`GET /monitor` answers for the worker that answers). A window of test texts (the
reference's own) resets the window; then a stream, a full window (a shorter source cycles), in requests of
`request_texts`, each followed by `GET /monitor` once its report covers every text sent (recomputed at most once a
second). The cost: the monitoring path's thread CPU per answered text over the engine's median time per text at b1.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import fmean, median
from typing import Any

import requests

from textclf.artifacts.manifest import read_manifest, require_export
from textclf.artifacts.records import write_report
from textclf.config import DataConfig, ServeConfig
from textclf.errors import ArtifactError
from textclf.inference.runtime import Classifier, default_intra_op_threads
from textclf.serving.batcher import Answer
from textclf.serving.drift import evaluate
from textclf.serving.monitoring import Monitoring
from textclf.serving.protocols.common import Call
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.schema import DRIFT_JSON, DriftBench, DriftCost, DriftStream, Measured
from textclf_benchmarks.servers import bento_spec, served_model, server_cpus, started
from textclf_benchmarks.texts import read_eval_rows, read_long_texts

SIZES = {"request_texts": 8, "chunk_texts": 250, "cost_texts": 500, "seed": 0}  # `run`'s defaults
Rows = list[tuple[str, str | None]]  # texts and their label names (None: unlabelled)


def excerpts(speeches: list[str], rng: random.Random, n: int, words: list[int] | None = None) -> Rows:
    """`n` excerpts of random speeches at random places: two consecutive sentences, or the next of `words` words."""
    out: Rows = []
    while len(out) < n:
        speech = rng.choice(speeches)
        parts = re.split(r"(?<=[.!?])\s+", speech.strip()) if words is None else speech.split()
        size = 2 if words is None else words[len(out) % len(words)]
        if len(parts) >= size:
            start = rng.randrange(len(parts) - size + 1)
            out.append((" ".join(parts[start : start + size]), None))
    return out


class Server:
    """A served Bento's `POST /predict`, then its worker's `GET /monitor` once that covers every text posted."""

    def __init__(self, url: str) -> None:
        self.url, self.posted = url, 0

    def post(self, texts: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The answers and the drift report after them (RuntimeError where either fails or no report comes)."""
        answer = requests.post(f"{self.url}/predict", json={"texts": texts}, timeout=120)
        self.posted, deadline = self.posted + len(texts), time.monotonic() + 10.0  # a report comes within a second
        while answer.ok and (report := requests.get(f"{self.url}/monitor", timeout=30)).ok:
            if report.json()["seen"] >= self.posted:
                return answer.json(), report.json()
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET /monitor has seen {report.json()['seen']} of the {self.posted} texts posted")
            time.sleep(0.05)
        failed = report if answer.ok else answer
        raise RuntimeError(f"{failed.url} answered {failed.status_code}: {failed.text[:300]}")


def stream(server: Server, name: str, about: tuple[str, Rows], reset: list[str], sizes: dict[str, int]) -> DriftStream:
    """Reset the window with `reset`, then post a stream (`about`: its source, its rows)."""
    (source, rows), per, chunk = about, sizes["request_texts"], sizes["chunk_texts"]
    before = [server.post(reset[start : start + 64])[1] for start in range(0, len(reset), 64)][-1]["alarm"]
    answers, fired, alarm_after = list[dict[str, Any]](), dict[str, int](), None
    for start in range(0, len(rows), per):
        found, report = server.post([text for text, _ in rows[start : start + per]])
        answers += found
        fired |= {s: len(answers) for s, r in report["signals"].items() if (r["score"] or 0) > 1 and s not in fired}
        alarm_after = alarm_after or (len(answers) if report["alarm"] else None)
    cuts, right = range(0, len(answers), chunk), [a["label"] == row[1] for a, row in zip(answers, rows, strict=True)]
    return DriftStream(
        name=name, source=source, texts=len(answers), alarm_before=before, alarm_after_texts=alarm_after,
        fired_after_texts=fired, scores={signal: r["score"] for signal, r in report["signals"].items()},
        estimated_accuracy=[fmean(a["score"] for a in answers[c : c + chunk]) for c in cuts],
        measured_accuracy=[fmean(right[c : c + chunk]) for c in cuts] if rows[0][1] is not None else None)  # fmt: skip


def monitor_cost(run_dir: Path, serve: ServeConfig, texts: list[str], work: Path) -> DriftCost:
    """The monitoring path's CPU per text against the engine's time at b1 (in a spawned process: `measure_cost`)."""
    # As in a worker: prometheus_client in multiprocess mode (set before BentoML's metrics import it), files in `work`.
    os.environ.update(PROMETHEUS_MULTIPROC_DIR=str(work), BENTOML_HOME=str(work))
    os.chdir(work)
    threads = serve.intra_op_threads or default_intra_op_threads(1)
    model = Classifier.from_run(run_dir, serve.variant, intra_op_threads=threads, allow_spinning=serve.ort_spinning)
    monitoring, calls, times = Monitoring.for_worker(model, run_dir, serve), [], []
    for text, encoding in zip(["warm-up", *texts], model.encode(["warm-up", *texts]), strict=True):
        started = time.perf_counter()
        logits, truncated = model.infer_encoded([encoding], 1)
        times.append(time.perf_counter() - started)
        answer = Answer(logits, truncated, tokens=[model.token_count(encoding)])
        calls.append((Call([text], None), model.predictions(logits, truncated), answer))
    drift, collector = monitoring.drift, monitoring.collector
    assert drift is not None and collector is not None  # `run` checked the reference; every worker collects
    monitoring.observe(*calls[0])
    collector.flush()  # the warm-up: BentoML's first record also writes its schema
    started = time.thread_time()
    for call in calls[1:]:
        monitoring.observe(*call)
    observe_s, started = time.thread_time() - started, time.thread_time()
    collector.flush()
    flush_s, started = time.thread_time() - started, time.thread_time()
    evaluate(drift, drift.reference)
    evaluation_s, n, engine_s = time.thread_time() - started, len(texts), median(times[1:])
    # One evaluation a second while texts arrive: at the b1 rate, evaluation_s × engine_s a text.
    return DriftCost(
        texts=n, observe_us=observe_s / n * 1e6, background_us=flush_s / n * 1e6, evaluation_ms=evaluation_s * 1e3,
        engine_ms=engine_s * 1e3, ratio=((observe_s + flush_s) / n + evaluation_s * engine_s) / engine_s)  # fmt: skip


def measure_cost(run_dir: Path, serve: ServeConfig, texts: list[str]) -> DriftCost:
    """`monitor_cost` in a fresh process (spawned: nothing of this one's imports or metrics), a temporary folder."""
    with tempfile.TemporaryDirectory() as work, multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(monitor_cost, (run_dir, serve, texts, Path(work)))


def run(cfg: BenchmarkConfig, run_dir: Path, *, load_data: Callable[[DataConfig], Any], **sizes: int) -> Path:
    """Write `reports/<run>/drift.json` (`sizes` override `SIZES`); `load_data`: the train stage's loader of the run's
    data config, for its validation split. ArtifactError where the served variant has no drift reference."""
    sizes, export, manifest = SIZES | sizes, require_export(run_dir), read_manifest(run_dir)
    variant = cfg.serve.variant or str(export.serving_variant)
    if (reference := export.variants[variant].drift_reference) is None:
        raise ArtifactError(f"{run_dir}: {variant} has no drift reference (exported before them); export it again")
    if export.threshold is not None:  # the streams' accuracy compares one answered label with one true label
        raise ArtifactError(f"{run_dir}: a multi-label model; bench-drift measures single-label ones")
    test: Rows = [(row["text"], export.label_names[row["label"]]) for row in read_eval_rows(run_dir, export)]
    data = load_data(DataConfig.model_validate(manifest.train.data.config) if manifest and manifest.train else cfg.data)
    split, window, rng = data.splits["validation"], reference.window, random.Random(sizes["seed"])
    validation: Rows = [(t, data.label_names[y]) for t, y in zip(split["text"], split["label"], strict=True)]
    speeches, common = read_long_texts(), max(export.label_names, key=[label for _, label in test].count)
    counts = [len(text.split()) for text, _ in rng.sample(test, len(test))]

    def cycled(rows: Rows) -> Rows:
        return [rows[i % len(rows)] for i in range(window)]

    streams = {
        "validation": ("the validation split", cycled(validation)),
        "speeches": ("convention speeches, two sentences each", excerpts(speeches, rng, window)),
        "one-class": (f"test texts of one class ({common})", cycled([row for row in test if row[1] == common])),
        "length-matched": ("speech excerpts of the test split's word counts", excerpts(speeches, rng, window, counts)),
    }
    serve = cfg.serve.model_copy(update={"workers": 1, "monitor_window": window})  # the served window must be export's
    spec = bento_spec(cfg.model_copy(update={"serve": serve}), run_dir, export)
    # The server reads its settings from the environment: the window and a pinned variant.
    pinned = {"TEXTCLF_SERVE_VARIANT": variant} if cfg.serve.variant else {}
    spec.env |= {"TEXTCLF_MONITOR_WINDOW": str(window), **pinned}
    with started(spec, cfg.reports_root / cfg.run / "logs" / "drift-bento.log", server_cpus(cfg.bench)) as (_, url):
        reset, server = [text for text, _ in cycled(test)], Server(url)
        results = [stream(server, name, about, reset, sizes) for name, about in streams.items()]
        model = served_model(url)
    report = DriftBench(
        **Measured.now(cfg.run), **{k: v for k, v in sizes.items() if k != "cost_texts"}, variant=variant,
        server=spec.what, model=model, reference=reference, streams=results,
        cost=measure_cost(run_dir, serve, [text for text, _ in test[: sizes["cost_texts"]]]))  # fmt: skip
    return write_report(cfg.reports_root / cfg.run / DRIFT_JSON, report)
