"""Start a real `bentoml serve` process on a free loopback port for a test (stopped by its process group).

The tests keep their own small launcher rather than borrow the benchmarks' (a test helper never imports a stage).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def loopback_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(run_dir: Path, home: Path, **serve: str) -> dict[str, str]:
    """The environment of a test server: the run's artifacts, its own BentoML home, and `TEXTCLF_<KEY>` settings."""
    env = {"TEXTCLF_ARTIFACTS": str(run_dir), "BENTOML_HOME": str(home)}
    return env | {f"TEXTCLF_{key.upper()}": value for key, value in serve.items()}


@contextmanager
def served(target: str, env: dict[str, str], log: Path, ready_timeout_s: float = 90) -> Iterator[str]:
    """Yield the base URL of a ready `bentoml serve TARGET`."""
    with served_process(target, env, log, ready_timeout_s) as (url, _):
        yield url


def _probe(url: str) -> str:
    """'200' when `url` answers 200, else what it answered instead (a status, or why nothing came back)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:  # listening, not ready
        return f"{exc.code} {exc.read()[:200]!r}"
    except (urllib.error.URLError, OSError) as exc:  # not listening yet
        return f"no answer: {exc}"


def _stacks_of_a_hung_server(process: subprocess.Popen[bytes], log: Path) -> str:
    """SIGABRT the group: with PYTHONFAULTHANDLER set, every process writes its threads' stacks into the log."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGABRT)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    return log.read_text(errors="replace")[-12000:]


def stop_group(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace_s`."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _start(target: str, env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """`bentoml serve TARGET` on a free loopback port, in its own process group, its output in `log`."""
    port = loopback_port()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    command = [bentoml, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            # PYTHONFAULTHANDLER: a server that never gets ready is SIGABRTed below and its stacks logged.
            env={**os.environ, "TEXTCLF_WORKERS": "1", "PYTHONFAULTHANDLER": "1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return f"http://127.0.0.1:{port}", process


def refused_at_start(target: str, env: dict[str, str], log: Path, says: str, timeout_s: float = 60) -> str:
    """The log of a `bentoml serve TARGET` that must refuse to start, once it `says` so (its worker's error).

    BentoML's arbiter may exit or keep restarting a failing worker: the log is read as soon as the error is in it,
    rather than waiting out a readiness timeout. AssertionError where the server gets ready or exits without saying
    it; RuntimeError where it does neither within `timeout_s`."""
    url, process = _start(target, env, log)
    try:
        deadline = time.monotonic() + timeout_s
        while says not in (text := log.read_text(errors="replace")) and process.poll() is None:
            assert _probe(f"{url}/readyz") != "200", f"the server got ready:\n{text[-4000:]}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"bentoml serve did not say {says!r} in {timeout_s} s:\n{text[-4000:]}")
            time.sleep(0.3)
        text = log.read_text(errors="replace")
        assert says in text, f"bentoml serve exited with {process.returncode} without saying {says!r}:\n{text[-4000:]}"
        return text
    finally:
        stop_group(process)


@contextmanager
def served_process(
    target: str, env: dict[str, str], log: Path, ready_timeout_s: float = 90
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield the base URL and the process (its own process group) of a ready `bentoml serve TARGET`.

    One worker unless `env` asks for more: the tests need the behaviour, not the throughput, and start faster.
    """
    url, process = _start(target, env, log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while (answer := _probe(f"{url}/readyz")) != "200":
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                stacks = _stacks_of_a_hung_server(process, log)
                raise RuntimeError(f"bentoml serve not ready after {ready_timeout_s} s (/readyz: {answer}):\n{stacks}")
            time.sleep(0.3)
        yield url, process
    finally:
        stop_group(process)
