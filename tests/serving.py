"""Start a real `bentoml serve` process on a free loopback port for a test (stopped by its process group)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.servers import free_port, running

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def serve_env(run_dir: Path, home: Path, **serve: str) -> dict[str, str]:
    """The environment of a test server: the run's artifacts, its own BentoML home, and `TEXTCLF_<KEY>` settings."""
    env = {"TEXTCLF_ARTIFACTS": str(run_dir), "BENTOML_HOME": str(home)}
    return env | {f"TEXTCLF_{key.upper()}": value for key, value in serve.items()}


@contextmanager
def served(target: str, env: dict[str, str], log: Path, ready_timeout_s: float = 90) -> Iterator[str]:
    """Yield the base URL of a ready `bentoml serve TARGET`."""
    with served_process(target, env, log, ready_timeout_s) as (url, _):
        yield url


@contextmanager
def served_process(
    target: str, env: dict[str, str], log: Path, ready_timeout_s: float = 90
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield the base URL and the process (its own process group) of a ready `bentoml serve TARGET`.

    One worker unless `env` asks for more: the tests need the behaviour, not the throughput, and start faster.
    """
    env = {"TEXTCLF_WORKERS": "1", **env}
    port = free_port()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    command = [bentoml, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running(
        command, f"{url}/readyz", env=env, log=log, cwd=PROJECT_ROOT, ready_timeout_s=ready_timeout_s
    ) as process:
        yield url, process
