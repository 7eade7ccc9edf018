"""The served Bento under load and in trouble: merged batches, overload, SIGTERM, a killed worker.

Real `bentoml serve` processes on loopback with the tiny exported model; no timing is asserted.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.serving import serve_env, served, served_process
from tests.tiny import tiny_texts
from textclf.config import Config
from textclf.runtime import Classifier

TEXTS = [t for t, _ in tiny_texts(96, seed=5)]


def _env(cfg: Config, home: Path, **serve: str) -> dict[str, str]:
    return serve_env(cfg.run_dir, home, **serve)


def _post(url: str, texts: list[str], timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/predict", json={"texts": texts}, timeout=timeout)


def _concurrently(url: str, requests_texts: list[list[str]], workers: int = 48) -> list[requests.Response]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda texts: _post(url, texts), requests_texts))


def test_concurrent_requests_equal_the_runtime(exported_run: Config, tmp_path: Path) -> None:
    expected = Classifier.from_run(exported_run.run_dir).predict(TEXTS)
    with served("service:TextClassifier", _env(exported_run, tmp_path), tmp_path / "log") as url:
        responses = _concurrently(url, [[text] for text in TEXTS] + [TEXTS[:7]])
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    single = [r.json()[0] for r in responses[:-1]]
    assert [item["label"] for item in single] == [p.label for p in expected]
    for item, prediction in zip(single, expected, strict=True):
        assert item["scores"] == pytest.approx(prediction.scores, abs=1e-5)
    assert [item["label"] for item in responses[-1].json()] == [p.label for p in expected[:7]]


def test_overload_answers_503_with_retry_after_and_stays_ready(exported_run: Config, tmp_path: Path) -> None:
    # A tiny queue and one text per ORT call: 48 concurrent requests of 8 texts cannot all be held.
    limits = {"max_queued_texts": "8", "max_texts_per_request": "8", "max_concurrency": "6", "max_batch_texts": "1"}
    env = _env(exported_run, tmp_path, **limits)
    with served("service:TextClassifier", env, tmp_path / "log") as url:
        responses = _concurrently(url, [TEXTS[i : i + 8] for i in range(0, 96, 2)])
        statuses = [r.status_code for r in responses]
        assert 503 in statuses and 200 in statuses, statuses
        for response in responses:
            if response.status_code != 200:
                assert response.status_code == 503 and response.headers["Retry-After"]
                assert response.json()["error_type"] == "overloaded"
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        assert _post(url, TEXTS[:2]).status_code == 200


def test_sigterm_answers_every_request_in_flight(exported_run: Config, tmp_path: Path) -> None:
    env = _env(exported_run, tmp_path, max_batch_texts="1")
    log = tmp_path / "log"
    with served_process("service:TextClassifier", env, log) as (url, process):
        with concurrent.futures.ThreadPoolExecutor(max_workers=48) as pool:
            batches = [TEXTS[i : i + 8] for i in range(0, 96, 2)]
            futures = [pool.submit(_post, url, texts) for texts in batches]
            time.sleep(0.05)  # every request has been sent; most are still queued behind the engine
            os.killpg(process.pid, signal.SIGTERM)
            responses = [future.result() for future in futures]
        assert process.wait(timeout=60) == 0
    assert [r.status_code for r in responses] == [200] * len(futures)
    assert [len(r.json()) for r in responses] == [len(texts) for texts in batches]
    assert "Completed cleanup hook: _drain" in log.read_text()


def _worker_pids(process: psutil.Process) -> set[int]:
    return {p.pid for p in process.children(recursive=True) if "_bentoml_impl.worker" in " ".join(p.cmdline())}


def test_a_killed_worker_comes_back(exported_run: Config, tmp_path: Path) -> None:
    with served_process("service:TextClassifier", _env(exported_run, tmp_path), tmp_path / "log") as (url, process):
        arbiter = psutil.Process(process.pid)
        before = _worker_pids(arbiter)
        assert before
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        answered = False
        while time.monotonic() < deadline and not answered:
            time.sleep(0.5)
            try:
                answered = _post(url, TEXTS[:3], timeout=10).status_code == 200
            except requests.RequestException:
                continue
        assert answered, "no answer after the worker was killed"
        while time.monotonic() < deadline and len(_worker_pids(arbiter) - {victim}) < len(before):
            time.sleep(0.5)
        after = _worker_pids(arbiter)
        assert victim not in after and len(after) == len(before), "the arbiter started a new worker"


@pytest.mark.slow
def test_a_minute_of_load_has_no_failures(exported_run: Config, tmp_path: Path) -> None:
    from textclf_benchmarks.load import run_locust

    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(TEXTS))
    cpus = set(range(os.cpu_count() or 1))
    with served("service:TextClassifier", _env(exported_run, tmp_path), tmp_path / "log") as url:
        stats = run_locust(url, 32, 60, texts_file, "textclf", tmp_path, cpus)
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    assert stats["requests"] > 0 and stats["failures"] == 0
