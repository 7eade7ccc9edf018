"""The servers `textclf load` measures, as child processes on loopback: how to start each one (`server_specs`: each
says what it is), waited for and stopped by their process group. Every server cuts a text at the export's
max_seq_len tokens, so none wins by reading less (each spec's `truncation` says how).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from textclf.artifacts.schema import ExportSection
from textclf.hardware import usable_cores
from textclf.inference.runtime import default_intra_op_threads
from textclf.inference.variants import VARIANTS
from textclf.paths import ONNX_DIR
from textclf_benchmarks.config import BenchConfig, BenchmarkConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PEER_SETUP = "make peer (benchmarks/peer/setup.sh)"
ENGINE_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
PEER_ENGINES = {  # infinity-emb 0.0.78's engines: the name a server's description gives, how its classifier cuts
    "optimum": ("optimum (ONNX Runtime)", "without truncation (a text over the model's positions fails)"),
    "torch": ("torch", "truncating at the tokenizer's model_max_length"),
}
PEER_SERVER = Path(__file__).resolve().parent / "peer_server.py"  # infinity-emb's CLI, cutting at max_seq_len


@dataclass
class ServerSpec:
    """One server under test. `command` holds `{port}` where the port goes."""

    name: str
    what: str
    command: list[str]
    ready: str
    api: str  # request shape, see benchmarks/locustfile.py
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = PROJECT_ROOT
    workers: int = 1  # engine processes, for the busy fraction
    has_engine_metrics: bool = False  # exposes textclf_infer_seconds on /metrics
    settings: dict[str, Any] = field(default_factory=dict)
    missing: str | None = None  # why it cannot run here
    prepare: Callable[[], object] | None = None  # run just before the server starts (not for servers left out)
    truncation: str | None = None  # where it cuts a long text, for the report


@contextmanager
def started(spec: ServerSpec, log: Path, cpus: set[int]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The server of `spec` on a free loopback port, pinned to `cpus`, ready (its `ready` path answers 200), as
    (process, base URL); stopped when the block ends, whatever happens: its process group gets SIGTERM, then SIGKILL
    if it lingers, so the workers it forked go with it."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in spec.command]
    url = f"http://127.0.0.1:{port}"
    if spec.prepare is not None:
        spec.prepare()

    def own_group() -> None:
        os.setsid()  # its own process group: the workers it forks are stopped with it
        if cpus:
            os.sched_setaffinity(0, cpus)

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        env = {**os.environ, **spec.env}
        process = subprocess.Popen(
            command, cwd=spec.cwd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=own_group
        )
    try:
        _wait_ready(url + spec.ready, process, log)
        yield process, url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log.read_text()[-4000:]}")


def peer_onnx_variant(export: ExportSection) -> str | None:
    """The `model.onnx` infinity's optimum engine serves: the serving variant's where it is an ONNX Runtime one, else
    the passing ONNX Runtime variant export timed fastest (b1 × b32 per text, as it ranks them), else None. An
    OpenVINO serving variant has no `model.onnx`; infinity then found none and refused to start (2026-12-06, Zen 4).
    """
    serving = str(export.serving_variant)
    if VARIANTS.get(serving) is None or VARIANTS[serving].engine == "onnxruntime":
        return serving
    timed = {
        name: cost
        for name, record in export.variants.items()
        if record.passed and name in VARIANTS and VARIANTS[name].engine == "onnxruntime"
        if (cost := record.serving_cost()) is not None
    }
    return min(timed, key=timed.__getitem__) if timed else None


def copy_peer_variant(run_dir: Path, variant: str | None, folder: Path) -> Path:
    """A copy of a variant's folder (model.onnx, config.json, tokenizer.json) for infinity's optimum engine: it loads
    the only `*.onnx` under `--model-id .`, and a copy keeps its files out of the artifacts.

    Raises:
        RuntimeError: no variant (no ONNX Runtime variant passed): the server is recorded as not run, with this.
    """
    if variant is None:
        raise RuntimeError("no passing ONNX Runtime variant with export timings for infinity's optimum engine")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run_dir / ONNX_DIR / variant, folder)
    return folder


def server_cpus(bench: BenchConfig) -> set[int]:
    """The CPUs the servers and their client are pinned to: `bench.server_cpus`, by default every usable core."""
    return set(range(usable_cores())) if bench.server_cpus is None else set(bench.server_cpus)


def served_model(url: str) -> dict[str, Any] | None:
    """A Bento's own account of what it runs (`GET /model`: variant, engine, threads), None where it gives none."""
    try:
        answer = requests.get(f"{url}/model", timeout=10)
        return dict(answer.json()) if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def bento_spec(cfg: BenchmarkConfig, run_dir: Path, export: ExportSection, bento: str | None = None) -> ServerSpec:
    """The Bento as configured (`serve.workers` × `serve.intra_op_threads`): `bentoml serve` of `bento` (a built
    Bento's tag) or, by default, of this checkout's `service.py` on the run's artifacts."""
    target = bento or "service:TextClassifier"
    artifacts = {} if bento else {"TEXTCLF_ARTIFACTS": str(run_dir.resolve())}
    variant, max_len = str(export.serving_variant), export.max_seq_len
    spec = VARIANTS.get(variant)  # as exported; the load report adds what the Bento says it runs (`GET /model`)
    runs = f"{variant} variant" + (f" on {ENGINE_NAMES[spec.engine]}" if spec else "")
    workers = cfg.serve.workers
    threads = cfg.serve.intra_op_threads or default_intra_op_threads(workers)
    return ServerSpec(
        name="bento",
        what=f"textclf Bento ({target}), {runs}, greedy batcher, {workers} worker(s) × {threads} thread(s)",
        command=[str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", "{port}"],
        ready="/readyz",
        api="textclf",
        env={**artifacts, "TEXTCLF_WORKERS": str(workers), "TEXTCLF_INTRA_OP_THREADS": str(threads)},
        workers=workers,
        has_engine_metrics=True,
        settings={"workers": workers, "intra_op_threads": threads, "max_seq_len": max_len},
        truncation=f"{max_len} tokens: its runtime's tokenizer truncation at the export's max_seq_len",
    )


def server_specs(
    cfg: BenchmarkConfig, run_dir: Path, export: ExportSection, bento: str | None, work: Path
) -> list[ServerSpec]:
    """Every server `textclf load` knows (`textclf_benchmarks.config.LOAD_SERVERS`), in that order."""
    checkpoint = Path(export.checkpoint.path)
    if not checkpoint.is_absolute():
        checkpoint = run_dir / checkpoint if (run_dir / checkpoint).exists() else checkpoint.resolve()
    variant, max_len = str(export.serving_variant), export.max_seq_len
    venv = Path(cfg.bench.peer_venv)
    peer_bin = (venv if venv.is_absolute() else PROJECT_ROOT / venv) / "bin"

    def infinity(
        name: str, folder: Path, engine: str, serving: str, prepare: Callable[[], object] | None = None
    ) -> ServerSpec:
        """infinity-emb 0.0.78 on `engine` (`optimum` or `torch`: PEER_ENGINES), `serving` saying which model."""
        engine_name, own_cut = PEER_ENGINES[engine]
        # infinity-emb's own CLI through peer_server.py (which makes it cut at max_seq_len like the others); -P: the
        # script's folder (benchmarks/, with modules such as `markdown.py`) stays off sys.path.
        # `--model-id .` from inside the folder: 0.0.78 does not find the ONNX file under an absolute path.
        command = [str(peer_bin / "python"), "-P", str(PEER_SERVER), "v2", "--model-id", "."]
        command += ["--engine", engine, "--device", "cpu"]
        command += ["--host", "127.0.0.1", "--port", "{port}", "--url-prefix", "", "--served-model-name", "textclf"]
        if engine == "optimum":
            # Our file as it is (no re-optimized copy), and no warm-up (its warm-up sends texts of 512 tokens and
            # more): the load tool warms every server itself.
            command += ["--onnx-disable-optimize", "--no-model-warmup"]
        home = str(work / f"{name}-home")  # its caches, outside the model folder and the user's HF cache
        return ServerSpec(
            name=name,
            what=f"infinity-emb 0.0.78, {engine_name} engine, {serving}",
            command=command,
            ready="/health",
            api="infinity",
            env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_HOME": home}
            | {"HF_HOME": home, "TEXTCLF_MAX_SEQ_LEN": str(max_len)},
            cwd=folder,
            settings={"engine": engine, "batch_size": "infinity default", "max_seq_len": max_len},
            prepare=prepare,
            truncation=f"{max_len} tokens: infinity-emb 0.0.78's {engine} classifier calls its transformers pipeline "
            f"{own_cut}; benchmarks/peer_server.py adds `truncation=True, max_length={max_len}` to that call",
            missing=None
            if (peer_bin / "infinity_emb").is_file()
            else f"infinity-emb is not installed in {peer_bin.parent}; `{PEER_SETUP}` installs it (not measured)",
        )

    baseline = ServerSpec(
        name="baseline",
        what="FastAPI + transformers pipeline on PyTorch (eager fp32), one text per request",
        command=[str(BIN / "python"), "-m", "uvicorn", "textclf_benchmarks.baseline_server:app"]
        + ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"],
        ready="/healthz",
        api="baseline",
        env={"TEXTCLF_CHECKPOINT": str(checkpoint), "TEXTCLF_MAX_SEQ_LEN": str(max_len)},
        settings={"max_seq_len": max_len},
        truncation=f"{max_len} tokens: its pipeline's tokenizer with `truncation=True, max_length={max_len}`",
    )
    peer_variant, peer_dir = peer_onnx_variant(export), work / "peer-model"
    peer_source = (
        f"the Bento's own {peer_variant} model.onnx"
        if peer_variant == variant
        else f"the {peer_variant} model.onnx (the fastest ONNX Runtime variant; the Bento serves {variant})"
    )
    optimum = f"serving {peer_source} (its pipeline runs one text per ONNX call)"
    return [
        bento_spec(cfg, run_dir, export, bento),
        baseline,
        infinity(
            "infinity-optimum", peer_dir, "optimum", optimum, lambda: copy_peer_variant(run_dir, peer_variant, peer_dir)
        ),
        infinity("infinity-torch", checkpoint, "torch", "serving the same checkpoint (PyTorch fp32)"),
    ]
