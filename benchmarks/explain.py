"""`textclf bench-explain`: are the served explanations faithful, and what does one cost? Into explain.json.

The deletion gap at k (`explain_deletion_gap_k3`): per test text, the drop in its explained label's log-odds with its
k top-attributed words deleted together, minus the mean drop over `draws` sets of k of its explained words drawn at
random; the mean over texts with a paired-bootstrap 95 % interval. Above 0: the words ranked first move the model
more than chance. Offline: the served variant, its calibrated probabilities, `textclf.inference.explain.explain`.

The cost (`explain_cost_ratio_b1`): the configured Bento of `textclf load` on loopback, one request at a time, each
text posted plain, explained and plain again in an order that rotates; the median latency of the explained requests
÷ the first plain ones', the second plain ones' ÷ the first ones' beside it (A/A: the run's noise floor).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import requests
from rich.progress import Progress
from tokenizers import Tokenizer

from textclf.artifacts.manifest import require_export
from textclf.artifacts.records import write_report
from textclf.inference.explain import (
    DEFAULT_MAX_WORDS,
    DEFAULT_TOP_K_WORDS,
    Score,
    Word,
    explain,
    reading_options,
    reading_windows,
    without_words,
)
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import TextOptions
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.schema import EXPLAIN_JSON, DeletionGap, ExplainCost, ExplainReport, Measured
from textclf_benchmarks.servers import bento_spec, served_model, server_cpus, started
from textclf_benchmarks.texts import read_eval_texts

logger = logging.getLogger(__name__)

K: Final = 3  # words deleted together: the headline's k
DRAWS: Final = 10  # random k-word sets per text
SCORE_TEXTS: Final = 256  # texts tokenized and scored at a time (bounds memory, moves the progress bar)
BATCH_TEXTS: Final = 32  # texts per engine call, sorted by length as `textclf predict` runs them
WARMUP_TEXTS: Final = 5  # texts posted each way, untimed, before the cost's rounds
KINDS: Final = ("plain", "explained", "plain-aa")


def log_odds(probabilities: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """log(p / (1 − p)), p clipped into [eps, 1 − eps]: a saturated float32 softmax would otherwise give an infinite
    drop, and one such text would decide the mean."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1.0 - eps)
    result: np.ndarray = np.log(p) - np.log1p(-p)
    return result


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, resamples: int = 2000, confidence: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` (one value per text, so resampling texts keeps each
    text's top and random drops paired).

    Raises:
        ValueError: no values.
    """
    if len(values) == 0:
        raise ValueError("a bootstrap interval needs at least one value")
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    means = np.asarray(values, dtype=np.float64)[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def deletion_gap(
    texts: Sequence[str],
    score: Score,
    tokenizer: Tokenizer,
    *,
    threshold: float | Sequence[float] | None = None,
    k: int = K,
    draws: int = DRAWS,
    seed: int = 0,
    max_words: int = DEFAULT_MAX_WORDS,
    windows: Sequence[tuple[int, int] | None] | None = None,
) -> DeletionGap:
    """The deletion gap at `k` on `texts`, each measured on its best predicted label, its interval from 2,000
    resamples; `seed` draws the random words and the resamples, so a run repeats exactly.

    Args:
        score: texts → (texts, labels) probabilities, reading every text the same way (as `explain` asks).
        threshold, max_words, windows: as `textclf.inference.explain.explain` takes them, as served.

    Raises:
        ValueError: `k` or `draws` not positive, or no text with a predicted label and more than `k` words.
    """
    if k < 1 or draws < 1:
        raise ValueError(f"k and draws must be positive integers, got {k} and {draws}")
    rng = np.random.default_rng(seed)
    texts = list(texts)
    original = np.asarray(score(texts))
    labels = [str(i) for i in range(original.shape[1])]  # explained by column index; names do not matter here
    # Every explained word, strongest first (top_k = max_words): the first k are the top set, all of them the pool
    # the random sets are drawn from.
    explanations = explain(
        texts, score, tokenizer, labels, threshold=threshold, top_k=max_words, max_words=max_words, windows=windows
    )
    measured: list[tuple[int, int]] = []  # (text index, label column)
    deleted: list[str] = []  # per measured text: its top-k deletion, then `draws` random-k deletions
    for i, (text, explanation) in enumerate(zip(texts, explanations, strict=True)):
        if not explanation.by_label or explanation.explained_words <= k:
            continue  # no label to explain, or the top and the random sets would coincide
        label, ranked = next(iter(explanation.by_label.items()))  # the best predicted label comes first
        words = [Word(w["start"], w["end"], w["word"]) for w in ranked]
        measured.append((i, int(label)))
        picks = [range(k)] + [rng.choice(len(words), size=k, replace=False) for _ in range(draws)]
        deleted += [without_words(text, [words[j] for j in pick]) for pick in picks]
    if not measured:
        raise ValueError(f"no text has a predicted label and more than k={k} words; the deletion gap is undefined")

    after = np.asarray(score(deleted)).reshape(len(measured), 1 + draws, -1)
    rows, columns = np.array(measured).T
    drops = log_odds(original[rows, columns])[:, None] - log_odds(after[np.arange(len(rows)), :, columns])
    top_drop, random_drop = drops[:, 0], drops[:, 1:].mean(axis=1)  # per text
    gaps = top_drop - random_drop
    low, high = bootstrap_interval(gaps, rng)
    logger.info("deletion gap at k=%d over %d texts: %.4f [%.4f, %.4f]", k, len(rows), gaps.mean(), low, high)
    return DeletionGap(
        mean=gaps.mean(),
        mean_top_drop=top_drop.mean(),
        mean_random_drop=random_drop.mean(),
        low=low,
        high=high,
        texts=len(rows),
        skipped=len(texts) - len(rows),
        k=k,
        draws=draws,
    )


def served_gap(classifier: Classifier, texts: list[str], max_words: int) -> DeletionGap:
    """The deletion gap of `classifier`'s explanations, every text read as the service reads an explained one."""
    options = reading_options(classifier.policy(TextOptions()), "right")
    windows = reading_windows(classifier.encode(texts, options))
    with Progress() as progress:
        task = progress.add_task("deletion gap: texts scored", total=0)

        def score(batch: list[str]) -> np.ndarray:
            # explain() and the deletions each hand over one list: the bar grows as each arrives.
            progress.update(task, total=(progress.tasks[task].total or 0) + len(batch))
            parts = [np.zeros((0, len(classifier.labels)))]
            for start in range(0, len(batch), SCORE_TEXTS):
                part = batch[start : start + SCORE_TEXTS]
                logits, _ = classifier.infer_encoded(classifier.encode(part, options), BATCH_TEXTS)
                parts.append(classifier.probabilities(logits))
                progress.advance(task, len(part))
            return np.concatenate(parts)

        cut = classifier.label_thresholds if classifier.label_thresholds is not None else classifier.threshold
        return deletion_gap(texts, score, classifier.tokenizer, threshold=cut, max_words=max_words, windows=windows)


def time_requests(url: str, texts: list[str], rounds: int, top_k_words: int) -> tuple[dict[str, list[float]], float]:
    """Client milliseconds of each kind of `POST /predict` (KINDS) over `rounds` passes of `texts`, one request at a
    time, and the mean words the server explained a text.

    Raises:
        RuntimeError: an answer other than 200, or an explained request answered without an explanation.
    """
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    words: list[int] = []

    def post(session: requests.Session, kind: str, text: str) -> None:
        body: dict[str, Any] = {"texts": [text]}
        if kind == "explained":
            body |= {"explain": True, "top_k_words": top_k_words}
        started_at = time.perf_counter()
        answer = session.post(f"{url}/predict", json=body, timeout=120)
        times[kind].append((time.perf_counter() - started_at) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"POST /predict answered {answer.status_code}: {answer.text[:300]}")
        if kind == "explained":
            (prediction,) = answer.json()
            if "explanation" not in prediction:
                raise RuntimeError(f"an explained request came back without an explanation: {str(prediction)[:300]}")
            words.append(int(prediction["explained_words"]))

    with requests.Session() as session, Progress() as progress:
        for text in texts[:WARMUP_TEXTS]:
            for kind in KINDS:
                post(session, kind, text)
        for kind in KINDS:  # the warm-up is not counted
            times[kind].clear()
        words.clear()
        task = progress.add_task("explain cost: requests", total=rounds * len(texts) * len(KINDS))
        for round_ in range(rounds):
            for i, text in enumerate(texts):
                # Who goes first rotates, so none always follows the same neighbour or always opens a text.
                shift = (i + round_) % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    post(session, kind, text)
                progress.advance(task, len(KINDS))
    return times, float(np.mean(words))


def measure_cost(cfg: BenchmarkConfig, run_dir: Path, texts: list[str], rounds: int, log: Path) -> ExplainCost:
    """The cost of an explained request on the configured Bento (started and stopped here whatever happens); a server
    that cannot start or does not explain is recorded with its reason."""
    record = ExplainCost(ran=False, texts=len(texts), rounds=rounds, top_k_words=DEFAULT_TOP_K_WORDS)
    spec = bento_spec(cfg, run_dir, require_export(run_dir))
    record.server = spec.what
    try:
        with started(spec, log, server_cpus(cfg.bench)) as (_, url):
            record.model = served_model(url)
            times, record.mean_explained_words = time_requests(url, texts, rounds, DEFAULT_TOP_K_WORDS)
    except (RuntimeError, requests.RequestException, subprocess.SubprocessError, OSError) as exc:
        record.reason = str(exc)[-500:]
        logger.warning("explain cost: %s", record.reason[-300:])
        return record
    plain, explained, again = (float(np.median(times[kind])) for kind in KINDS)
    record.plain_p50_ms, record.explained_p50_ms, record.plain_aa_p50_ms = plain, explained, again
    record.ratio, record.aa_ratio, record.ran = explained / plain, again / plain, True
    logger.info("explain cost: %.2f× a plain request (A/A %.3f)", record.ratio, record.aa_ratio)
    return record


def run(cfg: BenchmarkConfig, run_dir: Path, *, texts: int = 500, cost_texts: int = 100, rounds: int = 5) -> Path:
    """Measure the deletion gap on the first `texts` test texts and the cost on the first `cost_texts` (`rounds`
    passes); write `reports/<run>/explain.json` and return its path."""
    out_dir = cfg.reports_root / cfg.run
    eval_texts = read_eval_texts(run_dir, require_export(run_dir))
    classifier = Classifier.from_run(run_dir, cfg.serve.variant, on_overlength=cfg.serve.on_overlength)
    gap = served_gap(classifier, eval_texts[:texts], cfg.serve.max_explain_words)
    cost = measure_cost(cfg, run_dir, eval_texts[:cost_texts], rounds, out_dir / "logs" / "explain-bento.log")
    report = ExplainReport(
        **Measured.now(cfg.run),
        variant=classifier.variant,
        engine=classifier.engine.describe(),
        max_seq_len=classifier.max_seq_len,
        max_explain_words=cfg.serve.max_explain_words,
        deletion_gap=gap,
        cost=cost,
    )
    return write_report(out_dir / EXPLAIN_JSON, report)
