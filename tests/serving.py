"""Start a real `bentoml serve` process on a free loopback port, and stop it by its process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bentoml_command(target: str, port: int) -> list[str]:
    bentoml = Path(sys.executable).parent / "bentoml"
    return [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(port)]


@contextmanager
def served(target: str, env: dict[str, str], log: Path, ready_timeout_s: float = 90) -> Iterator[str]:
    """Yield the base URL of a ready server; the whole process group is killed afterwards."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            bentoml_command(target, port),
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: workers die with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log, ready_timeout_s)
        yield url
    finally:
        stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
