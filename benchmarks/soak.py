"""The soak: the configured Bento alone under a long closed-loop load, its workers' memory sampled throughout.

A worker whose resident memory keeps growing under steady load leaks; one the arbiter restarted starts its memory
afresh, so every sample re-reads the workers' PIDs and a change is recorded, never read as a drop. Growth counts
from the first sample at or after the first minute (a shorter soak: its first half), when the engine's arenas and
the batcher's buffers have reached their working size.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from textclf_benchmarks.config import BenchConfig
from textclf_benchmarks.schema import LoadPhase, PidChange, RssSample, Soak, SoakWorker
from textclf_benchmarks.servers import ServerSpec, rss_mb_by_pid, sampling, started

logger = logging.getLogger(__name__)

WORKER_MARK = "_bentoml_impl.worker"  # in the command line of every BentoML worker process
SETTLE_S = 60.0

Locust = Callable[[str, int, int], dict]  # (url, users, seconds) -> the phase's figures (see `load.run_locust`)


def worker_rss_mb(root: psutil.Process) -> dict[int, float]:
    """Each live BentoML worker's resident set size (MiB) by PID under the `bentoml serve` process (an exited one, not
    yet reaped, is not); empty where the server is gone."""
    try:
        return {pid: round(mb, 1) for pid, mb in rss_mb_by_pid(root.children(recursive=True), WORKER_MARK).items()}
    except psutil.Error:
        return {}


def worker_pids(root: psutil.Process) -> set[int]:
    """The live BentoML workers under the `bentoml serve` process."""
    return set(worker_rss_mb(root))


def pid_changes(samples: list[RssSample]) -> list[PidChange]:
    """Each moment the set of workers differs from the sample before."""
    changes = []
    for before, after in itertools.pairwise(samples):
        old, new = {int(p) for p in before.rss_mb}, {int(p) for p in after.rss_mb}
        if old != new:
            changes.append(PidChange(t_s=after.t_s, started=sorted(new - old), gone=sorted(old - new)))
    return changes


def summarize(samples: list[RssSample], settle_s: float) -> tuple[list[SoakWorker], float | None, int]:
    """Per worker: RSS at the settled sample and at the end, and growth where it lived through both; the largest
    growth; how many workers started after the first sample (restarts)."""
    if not samples:
        return [], None, 0
    settled = next((s for s in samples if s.t_s >= settle_s), samples[-1])
    end = samples[-1]
    seen = dict.fromkeys(pid for s in samples for pid in s.rss_mb)  # every worker, in the order they appeared
    workers = []
    for pid in seen:
        start_mb, end_mb = settled.rss_mb.get(pid), end.rss_mb.get(pid)
        growth = None
        if start_mb and end_mb is not None and settled is not end:
            growth = round((end_mb - start_mb) / start_mb * 100, 2)
        workers.append(SoakWorker(pid=int(pid), rss_mb_settled=start_mb, rss_mb_end=end_mb, growth_pct=growth))
    growths = [w.growth_pct for w in workers if w.growth_pct is not None]
    restarts = len(set(seen) - set(samples[0].rss_mb))
    return workers, max(growths, default=None), restarts


def run_soak(spec: ServerSpec, bench: BenchConfig, minutes: float, cpus: set[int], log: Path, locust: Locust) -> Soak:
    """Start `spec` alone, load it with `bench.soak_users` closed-loop users for `minutes`, and sample its workers'
    RSS every `bench.soak_sample_s` seconds."""
    users, sample_s = bench.soak_users, bench.soak_sample_s
    seconds = max(1, round(minutes * 60))
    settle_s = min(SETTLE_S, seconds / 2)
    shape = {"users": users, "minutes": minutes, "sample_interval_s": sample_s, "settle_s": settle_s}
    record = Soak(ran=False, server=spec.name, what=spec.what, **shape)
    if spec.missing:
        record.reason = spec.missing
        return record
    logger.info("soak: %s alone, %d users, %d s, RSS every %.0f s", spec.name, users, seconds, sample_s)
    samples: list[RssSample] = []
    try:
        with started(spec, log, cpus) as (process, url):
            started_at, root = time.monotonic(), psutil.Process(process.pid)

            def sample() -> None:
                sizes = {str(pid): mb for pid, mb in sorted(worker_rss_mb(root).items())}
                samples.append(RssSample(t_s=round(time.monotonic() - started_at, 1), rss_mb=sizes))

            with sampling(sample, sample_s):
                stats = locust(url, users, seconds)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        record.reason = str(exc)[-500:]
        logger.warning("soak: %s", record.reason[-300:])
        return record
    record.samples = samples
    record.pid_changes = pid_changes(samples)
    record.workers, record.rss_growth_pct, record.worker_restarts = summarize(samples, settle_s)
    record.phase = LoadPhase.model_validate(stats)
    record.ran = True
    if not record.workers:
        record.ran, record.reason = False, f"no process with `{WORKER_MARK}` in its command line under the server"
    p = record.phase
    logger.info("soak: %.1f req/s, %d failures, p99 %.1f ms", p.rps, p.failures, p.p99_ms)
    logger.info("soak: RSS growth %s %%, %s worker restart(s)", record.rss_growth_pct, record.worker_restarts)
    return record
