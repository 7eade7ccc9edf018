"""The served Bento under load and in trouble: merged batches, overload, SIGTERM, a killed worker, a dead engine.

Real `bentoml serve` processes on loopback with the tiny exported model. No speed is asserted; the only time
bounds are the issue's promises (a dead engine's queued requests are answered within a second).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from tests.serving import serve_env, served, served_process
from tests.tiny import tiny_texts
from textclf.config import Config
from textclf.inference.runtime import Classifier

TEXTS = [t for t, _ in tiny_texts(96, seed=5)]


def _env(cfg: Config, home: Path, **serve: str) -> dict[str, str]:
    return serve_env(cfg.run_dir, home, **serve)


def _post(url: str, texts: list[str], timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/predict", json={"texts": texts}, timeout=timeout)


def _timed_post(url: str, texts: list[str]) -> tuple[requests.Response, float, float]:
    """The response, and when (monotonic) the request started and its answer arrived."""
    started = time.monotonic()
    response = _post(url, texts, timeout=30)
    return response, started, time.monotonic()


def _predict_requests(url: str) -> tuple[int, int]:
    """(in progress, answered) /predict requests of the server, from BentoML's own metrics."""
    text = requests.get(f"{url}/metrics", timeout=10).text

    def total(name: str) -> int:
        pattern = rf'^bentoml_service_{name}{{[^}}]*endpoint="/predict"[^}}]*}} (\S+)$'
        return round(sum(float(v) for v in re.findall(pattern, text, re.M)))

    return total("request_in_progress"), total("request_total")


def worker_pids(arbiter: psutil.Process) -> set[int]:
    """The live BentoML workers under the `bentoml serve` process (an exited one, not yet reaped, is not)."""
    pids = set()
    for child in arbiter.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # one that exits or turns zombie while it is read
            if child.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(child.cmdline()):
                pids.add(child.pid)
    return pids


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.02)


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
    # A tiny queue and one text per engine call: 48 concurrent requests of 8 texts cannot all be held.
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
    # A slow engine (test-only hook: every engine call sleeps 50 ms first) keeps most requests queued when SIGTERM
    # arrives; each must still get its full answer, none a dropped connection.
    env = _env(exported_run, tmp_path, max_batch_texts="1", debug_engine_delay_s="0.05")
    batches = [TEXTS[i : i + 4] for i in range(0, 64, 4)]  # 16 requests, 64 engine calls: ~3 s of work
    with served_process("service:TextClassifier", env, tmp_path / "log") as (url, process):
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(batches)) as pool:
            futures = [pool.submit(_timed_post, url, texts) for texts in batches]
            _wait_until(lambda: sum(_predict_requests(url)) == len(batches), 20, "every request reached the server")
            in_flight, _ = _predict_requests(url)
            signalled = time.monotonic()
            os.killpg(process.pid, signal.SIGTERM)
            results = [future.result() for future in futures]  # a dropped connection raises here
        assert process.wait(timeout=60) == 0
    assert [response.status_code for response, _, _ in results] == [200] * len(batches)
    assert [len(response.json()) for response, _, _ in results] == [len(texts) for texts in batches]
    assert in_flight >= len(batches) // 2, "SIGTERM came too late to find requests in flight"
    answered_after = sum(finished > signalled for _, _, finished in results)
    assert answered_after >= in_flight // 2  # they were answered during the shutdown, not before it


def test_a_killed_worker_comes_back(exported_run: Config, tmp_path: Path) -> None:
    with served_process("service:TextClassifier", _env(exported_run, tmp_path), tmp_path / "log") as (url, process):
        arbiter = psutil.Process(process.pid)
        before = worker_pids(arbiter)
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
        while time.monotonic() < deadline and len(worker_pids(arbiter) - {victim}) < len(before):
            time.sleep(0.5)
        after = worker_pids(arbiter)
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


KILL_TEXT = "__textclf_test_kill_engine__"


def test_a_dead_engine_thread_is_noticed_and_the_worker_restarts(exported_run: Config, tmp_path: Path) -> None:
    # Test-only hooks: each engine call sleeps 1.5 s first (requests queue behind the killer's call), and the
    # marker text then raises a BaseException in the engine thread. timeout_s bounds the old behaviour: a 504.
    delay = {"debug_engine_delay_s": "1.5", "debug_kill_engine_text": KILL_TEXT}
    env = _env(exported_run, tmp_path, max_batch_texts="1", timeout_s="10", **delay)

    with served_process("service:TextClassifier", env, tmp_path / "log") as (url, process):
        arbiter = psutil.Process(process.pid)
        (victim,) = worker_pids(arbiter)
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            killer = pool.submit(_timed_post, url, [KILL_TEXT])
            _wait_until(lambda: _predict_requests(url)[0] == 1, 5, "the killer's call started")
            queued = [pool.submit(_timed_post, url, [text]) for text in TEXTS[:5]]
            _wait_until(lambda: _predict_requests(url)[0] == 6, 5, "five requests queued behind it")
            assert not killer.done(), "the engine died before the requests were queued: raise the delay"
            results = [future.result() for future in [killer, *queued]]
        livez = requests.get(f"{url}/livez", timeout=5)

        death = results[0][2]  # the killer is answered when the engine thread dies
        for response, _, finished in results:
            assert response.status_code == 503, response.text
            assert set(response.json()) == {"error", "error_type"}
            assert response.json()["error_type"] == "engine_unavailable" and response.headers["Retry-After"]
            assert finished - death < 1.0, "a queued request waited after the engine died"
        assert all(finished - started > 0.5 for _, started, finished in results[1:])  # they had been queued
        assert livez.status_code == 503  # BentoML's liveness hook (__is_alive__) reports the death

        # The worker exits by itself and the arbiter starts a fresh one, which serves again.
        _wait_until(lambda: victim not in worker_pids(arbiter), 30, "the worker with the dead engine exited")
        deadline = time.monotonic() + 90
        answered = None
        while answered is None and time.monotonic() < deadline:
            try:
                response = _post(url, TEXTS[:2], timeout=30)
                answered = response if response.status_code == 200 else None
            except requests.RequestException:
                pass
            if answered is None:
                time.sleep(0.5)
        assert answered is not None, "no answer after the engine died"
        assert [item["label"] in ("neg", "pos") for item in answered.json()] == [True, True]
        assert requests.get(f"{url}/livez", timeout=10).status_code == 200
        assert len(worker_pids(arbiter) - {victim}) == 1
