"""`textclf bench-bulk`: bulk prediction locally and on Ray Data, on one generated file of test texts.

`bulk_ray_vs_local`: `--engine ray`, 1 actor × 2 CPUs on its own local cluster ÷ the local path on 2 threads.
`bulk_ray_scaling_2_nodes`: 2 × 1 CPU ÷ 1 × 1 CPU on `ray start` nodes on loopback (a one-machine proxy for scaling
out), each timed on its second job as a standing cluster runs all but its first (docs/benchmarks.md says why). Both
sides count loading the model, as a job pays it; each actor's peak RSS is sampled while it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from textclf.artifacts.manifest import require_export
from textclf.artifacts.records import write_report
from textclf.bulk.local import bulk_streams
from textclf.bulk.local import run as local_run
from textclf.bulk.ray_data import WORKER_POOL
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.schema import BULK_JSON, BulkReport, BulkRun, Measured
from textclf_benchmarks.servers import BIN, free_port
from textclf_benchmarks.texts import read_eval_texts

logger = logging.getLogger(__name__)

ACTOR_PATTERN = "MapBatches(Predictor)"  # in the process title of every actor of the pool
WARMUP_ROWS = 1_000  # the first job on each `ray start` cluster, untimed: see the module docstring


def _write_input(path: Path, texts: list[str], rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            handle.write(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n")


def _actor_rss_mb() -> float:
    """The largest RSS (MiB) of the pool's actor processes running now (0 where none is); one that exits, turns zombie
    or may not be read meanwhile is left out."""
    sizes = [0.0]
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if ACTOR_PATTERN in " ".join(process.cmdline()):
                sizes.append(process.memory_info().rss / 2**20)
    return max(sizes)


@contextlib.contextmanager
def sampling(sample: Callable[[], None], interval_s: float) -> Iterator[None]:
    """Calls `sample` when the block starts, every `interval_s` in a thread while it runs, and once when it ends."""
    stop_event = threading.Event()

    def loop() -> None:
        while not stop_event.wait(interval_s):
            sample()

    thread = threading.Thread(target=loop, name="sampler", daemon=True)
    sample()
    thread.start()
    try:
        yield
    finally:
        stop_event.set()
        thread.join()
        sample()


@contextlib.contextmanager
def ray_cluster(nodes: int, cpus_per_node: int, work: Path) -> Iterator[dict[str, str]]:
    """A head (+ nodes - 1 workers) on loopback; yields the environment a driver joins it with."""
    ray = str(BIN / "ray")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_TMPDIR": str(work / "ray")}
    env |= {f"RAY_{key}": str(value) for key, value in WORKER_POOL.items()}  # as a local `--engine ray` cluster
    full_env = {**os.environ, **env}
    common = ["--num-cpus", str(cpus_per_node), "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    port = free_port()
    head = [ray, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common]

    def start(command: list[str]) -> None:
        done = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=180, check=False)
        if done.returncode != 0:  # Ray says why on stderr; check=True alone showed only the exit status
            raise RuntimeError(f"{' '.join(command[1:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")

    try:
        start(head)
        for _ in range(nodes - 1):
            start([ray, "start", "--address", f"127.0.0.1:{port}", *common])
        yield env | {"RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        subprocess.run([ray, "stop", "--force"], env=full_env, capture_output=True, timeout=180)


def _ray_run(
    cfg: BenchmarkConfig, source: Path, out: Path, actors: int, cpus: int, env: dict[str, str] | None
) -> BulkRun:
    """One `textclf predict --engine ray` process (Ray reads its token when imported: a process of its own)."""
    textclf = str(BIN / "textclf")
    command = [textclf, "predict", "--set", f"artifacts_root={cfg.artifacts_root}", "--run", cfg.run]
    command += ["-i", str(source), "-o", str(out), "--engine", "ray", "--actors", str(actors)]
    command += ["--cpus-per-actor", str(cpus)]
    peaks = [0.0]
    with sampling(lambda: peaks.append(_actor_rss_mb()), 0.5):
        done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"textclf predict --engine ray failed:\n{done.stderr[-3000:]}")
    line = done.stdout.strip().splitlines()[-1]
    logger.info("ray %d × %d: %s", actors, cpus, line)
    engine = f"ray {actors} actor(s) × {cpus} CPU, {bulk_streams(cpus)} engine copies each"
    return _layout(engine, actors, cpus, *parse_summary(line), peak_actor_rss_mb=round(max(peaks), 1) or None)


def _layout(engine: str, actors: int, cpus: int, rows: int, seconds: float, **measured: float | None) -> BulkRun:
    return BulkRun(
        engine=engine,
        nodes=1,
        actors=actors,
        cpus_per_actor=cpus,
        rows=rows,
        seconds=round(seconds, 2),
        texts_per_s=round(rows / seconds, 1),
        **measured,
    )


def parse_summary(line: str) -> tuple[int, float]:
    """Rows predicted and seconds from the one-line summary `N rows: P predicted, ...; S s, T texts/s → out`."""
    predicted = int(line.split(" predicted")[0].split(": ")[-1].replace(",", ""))
    seconds = float(line.split(" s, ")[0].split("; ")[-1])
    return predicted, seconds


def run(cfg: BenchmarkConfig, run_dir: Path, *, rows: int = 100_000, out_dir: Path | None = None) -> Path:
    """Measure the three layouts on one generated file and write `reports/<run>/bulk.json`."""
    export = require_export(run_dir)
    out_dir = out_dir or cfg.reports_root / cfg.run
    texts = read_eval_texts(run_dir, export)
    report = BulkReport(**Measured.now(cfg.run), rows=rows, runs={})
    with tempfile.TemporaryDirectory(prefix="textclf-bulk-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        source = work / "texts.jsonl"
        _write_input(source, texts, rows)
        started = time.perf_counter()
        summary = local_run(run_dir, source, work / "local.jsonl", text_column="text", intra_op_threads=2)
        seconds, engine = time.perf_counter() - started, f"local, 2 intra-op threads, {bulk_streams(2)} engine copies"
        loading = round(seconds - summary.seconds, 2)
        report.runs["local"] = _layout(engine, 1, 2, summary.predicted, seconds, load_seconds=loading)
        logger.info("local: %s", summary.line())
        report.runs["ray-1x2"] = _ray_run(cfg, source, work / "ray-1x2.jsonl", 1, 2, None)
        warmup = work / "warmup.jsonl"
        _write_input(warmup, texts, min(rows, WARMUP_ROWS))
        for name, nodes in (("ray-1-node-1x1", 1), ("ray-2-nodes-2x1", 2)):
            with ray_cluster(nodes, 1, work / f"c{nodes}") as env:  # a short name: Ray puts its sockets under it
                first = _ray_run(cfg, warmup, work / f"{name}-warmup.jsonl", nodes, 1, env)
                timed = _ray_run(cfg, source, work / f"{name}.jsonl", nodes, 1, env)
                report.runs[name] = timed.model_copy(update={"nodes": nodes, "warmup_seconds": first.seconds})
    runs = report.runs
    report.bulk_ray_vs_local = round(runs["ray-1x2"].texts_per_s / runs["local"].texts_per_s, 3)
    report.bulk_ray_scaling_2_nodes = round(runs["ray-2-nodes-2x1"].texts_per_s / runs["ray-1-node-1x1"].texts_per_s, 3)
    return write_report(out_dir / BULK_JSON, report)
