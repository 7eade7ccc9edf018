"""`textclf load`: locust against the served Bento, the FastAPI + PyTorch baseline and the peer server infinity-emb,
all in one run on the same texts (`textclf_benchmarks.servers` says what each is).

Per server: a short unrecorded warm-up, the phases of `bench.load_users` and 1 user again right after the burst
(`1-after-64`: a batcher that stays slow after load shows there), then the long-text phase (`32-long`). Per phase:
req/s, exact latency percentiles, failures, the server's CPU seconds per request (its whole process tree) and, for
the Bento, the engine's busy fraction.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import requests

from textclf.artifacts.manifest import require_export
from textclf.artifacts.records import write_report
from textclf.errors import ConfigError
from textclf.paths import LOAD_JSON, ONNX_DIR
from textclf_benchmarks.config import BenchConfig, BenchmarkConfig
from textclf_benchmarks.schema import LONG_SUFFIX, PROTOCOL_APIS, LoadPhase, LoadReport, Measured, ServerRecord
from textclf_benchmarks.servers import BIN, ServerSpec, served_model, server_cpus, server_specs, started
from textclf_benchmarks.texts import long_excerpts, read_eval_texts

logger = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
AFTER_BURST_PREFIX = "1-after-"
PROTOCOL_SERVER = "bento"  # the one server that also runs the v2 / Hugging Face phases
_INFER_SUM = re.compile(r"^textclf_infer_seconds_sum(?:\{[^}]*\})? (\S+)$", re.M)


def phases(users: list[int]) -> list[tuple[str, int]]:
    """(name, users) of each phase: the configured counts, then one user right after the last (the burst)."""
    named = [(str(n), n) for n in users]
    if len(users) > 1:
        named.append((f"{AFTER_BURST_PREFIX}{users[-1]}", 1))
    return named


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (a server's workers included)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that exited between listing and reading
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def engine_seconds(url: str) -> float | None:
    """Total ONNX Runtime seconds so far, summed over the server's workers, from its /metrics."""
    try:
        text = requests.get(f"{url}/metrics", timeout=10).text
    except requests.RequestException:
        return None
    values = _INFER_SUM.findall(text)
    return sum(float(v) for v in values) if values else None


def run_locust(url: str, users: int, seconds: int, texts_file: Path, api: str, work: Path, cpus: set[int]) -> dict:
    """One headless, closed-loop locust run; req/s and failures from locust, percentiles from exact times."""
    prefix = work / f"{api}-{users}-{time.monotonic_ns()}"
    times_file = prefix.with_suffix(".times")
    command = [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users)]
    command += ["-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--only-summary", "--stop-timeout", "5"]
    command += ["--exit-code-on-error", "0", "--loglevel", "WARNING"]
    env = {"TEXTCLF_LOAD_TEXTS": str(texts_file), "TEXTCLF_LOAD_API": api, "TEXTCLF_LOAD_TIMES": str(times_file)}
    pin = partial(os.sched_setaffinity, 0, cpus)
    subprocess.run(
        command, env={**os.environ, **env}, check=True, timeout=seconds + 90, capture_output=True, preexec_fn=pin
    )
    with (prefix.parent / f"{prefix.name}_stats.csv").open() as handle:
        aggregated = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    times = np.loadtxt(times_file, ndmin=1) if times_file.is_file() and times_file.stat().st_size else np.zeros(0)
    quantiles = np.percentile(times, [50, 95, 99]) if times.size else [float("nan")] * 3
    counts = {"requests": int(aggregated["Request Count"]), "failures": int(aggregated["Failure Count"])}
    latency = {f"p{q}_ms": float(ms) for q, ms in zip((50, 95, 99), quantiles, strict=True)}
    return {"users": users, "seconds": seconds, **counts, "rps": float(aggregated["Requests/s"]), **latency}


def _measure_server(
    spec: ServerSpec, pid: int, url: str, bench: BenchConfig, texts: dict[str, Path], locust: Callable[..., dict]
) -> dict[str, LoadPhase]:
    """The short-text phases, then (where `texts` has them) the long-text phase, each kind after its own short
    warm-up. Per phase: locust's figures, the server's CPU seconds per request and, with engine metrics, its busy
    fraction. The configured Bento also runs its `bench.load_protocol_users` phase through the other protocols'
    routes (`32-v2`, `32-hf`), right after the native phase of the same users, so their ratio is taken side by side.
    `locust(url, users, seconds, texts_file, api)` runs one phase (`run_locust`)."""
    seconds = bench.load_seconds

    def measure(name: str, users: int, kind: str, api: str | None = None) -> LoadPhase:
        logger.info("%s: phase %s (%d users, %d s)", spec.name, name, users, seconds)
        cpu_before = tree_cpu_seconds(pid)
        engine_before = engine_seconds(url) if spec.has_engine_metrics else None
        phase = LoadPhase.model_validate(locust(url, users, seconds, texts[kind], api or spec.api))
        cpu_used = tree_cpu_seconds(pid) - cpu_before
        engine_after = engine_seconds(url) if spec.has_engine_metrics else None
        if phase.requests:
            phase.cpu_s_per_request = cpu_used / phase.requests
        if engine_before is not None and engine_after is not None:
            phase.engine_busy = (engine_after - engine_before) / (seconds * spec.workers)
        figures = f"{phase.rps:.1f} req/s, p50 {phase.p50_ms:.1f} ms, p99 {phase.p99_ms:.1f} ms"
        logger.info(
            "%s @%s: %s, %d failures, engine busy %s", spec.name, name, figures, phase.failures, phase.engine_busy
        )
        return phase

    results: dict[str, LoadPhase] = {}
    for kind, path in texts.items():  # "short", then "long"
        if bench.load_warmup_seconds:
            locust(url, 1, bench.load_warmup_seconds, path, spec.api)
        if kind == "long":
            name = f"{bench.load_long_users}{LONG_SUFFIX}"
            results[name] = measure(name, bench.load_long_users, "long")
            continue
        for name, users in phases(bench.load_users):
            results[name] = measure(name, users, "short")
            if spec.name == PROTOCOL_SERVER and name == str(bench.load_protocol_users):
                for api in PROTOCOL_APIS:
                    results[f"{name}-{api}"] = measure(f"{name}-{api}", users, "short", api)
    return results


def run(
    cfg: BenchmarkConfig,
    run_dir: Path,
    *,
    bento: str | None = None,
    servers: list[str] | None = None,
    out_dir: Path | None = None,
) -> Path:
    """Load-test each server through every phase; write `reports/<run>/load.json`. Every server is started and
    stopped here, whatever happens; one that cannot start (a peer that is not installed) is recorded with its reason."""
    started_at = time.perf_counter()
    export = require_export(run_dir)
    bench = cfg.bench
    out_dir = out_dir or cfg.reports_root / cfg.run
    cpus = server_cpus(bench)
    chosen = servers or list(bench.load_servers)
    result = LoadReport(
        **Measured.now(cfg.run),
        pinning=f"servers and the locust client all pinned to CPUs {sorted(cpus)} with sched_setaffinity "
        "(the client shares the servers' cores)",
        request="one test-split text per request, closed loop (no wait between requests); "
        f"{bench.load_warmup_seconds} s of one user before each server's phases, not recorded",
        servers={},
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        specs = {spec.name: spec for spec in server_specs(cfg, run_dir, export, bento, work)}
        unknown = sorted(set(chosen) - set(specs))
        if unknown:
            raise ConfigError(f"unknown server(s) {unknown}; known: {sorted(specs)}")
        locust = partial(run_locust, work=work, cpus=cpus)
        texts = {"short": work / "texts.json"}
        texts["short"].write_text(json.dumps(read_eval_texts(run_dir, export)))
        long_servers = set(chosen) & set(bench.load_long_servers) if bench.load_long_users else set()
        if long_servers:
            tokenizer_dir = run_dir / ONNX_DIR / str(export.serving_variant)
            excerpts, result.long_texts = long_excerpts(tokenizer_dir, export.max_seq_len)
            if excerpts:
                texts["long"] = work / "long-texts.json"
                texts["long"].write_text(json.dumps(excerpts))
        for name in chosen:
            spec = specs[name]
            record = ServerRecord(what=spec.what, ran=False, settings=spec.settings or None)
            result.servers[name] = record
            if spec.missing:
                record.reason = spec.missing
                logger.warning("%s: %s", name, spec.missing)
                continue
            if name in long_servers and "long" in texts:
                record.truncation = spec.truncation
            server_texts = texts if name in long_servers else {"short": texts["short"]}
            try:
                with started(spec, out_dir / "logs" / f"{name}.log", cpus) as (process, url):
                    record.model = served_model(url) if spec.has_engine_metrics else None
                    record.results = _measure_server(spec, process.pid, url, bench, server_texts, locust)
                record.ran = True
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                record.ran, record.reason = False, str(exc)[-500:]
                logger.warning("%s: %s", name, str(exc)[-300:])
    result.wall_time_s = round(time.perf_counter() - started_at, 1)
    return write_report(out_dir / LOAD_JSON, result)
