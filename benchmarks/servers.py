"""Start HTTP servers as child processes on loopback, wait for them, and stop them by their process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpus: set[int] | None) -> None:
    os.setsid()  # its own process group: workers it forks are stopped with it
    if cpus:
        os.sched_setaffinity(0, cpus)


@contextmanager
def running(
    command: list[str],
    ready_url: str,
    *,
    env: dict[str, str] | None = None,
    log: Path,
    cwd: Path | None = None,
    cpus: set[int] | None = None,
    ready_timeout_s: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` until the block ends; `ready_url` must answer 200 before the block starts."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _pin(cpus),
        )
    try:
        wait_ready(ready_url, process, log, ready_timeout_s)
        yield process
    finally:
        stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
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


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
