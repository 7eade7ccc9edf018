"""The HTTP contract of a real `bentoml serve` (tiny model, loopback): the published OpenAPI document is the
real one (schemathesis finds nothing), API keys, request ids, and the error shape of a timeout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.serving import serve_env, served
from textclf.config import Config

KEY = "contract-test-key-0123456789"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SCHEMATHESIS_CONFIG = Path(__file__).resolve().parent.parent / "schemathesis.toml"


def _env(cfg: Config, home: Path, **serve: str) -> dict[str, str]:
    limits = {"max_texts_per_request": "8", "max_chars_per_text": "300"}
    return serve_env(cfg.run_dir, home, **(limits | serve))


@pytest.fixture(scope="module")
def open_server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("open")
    with served("service:TextClassifier", _env(exported_run, home), home / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("keyed")
    with served("service:TextClassifier", _env(exported_run, home, api_keys=KEY), home / "serve.log") as url:
        yield url


def _schemathesis(url: str, cwd: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCHEMATHESIS), "--config-file", str(SCHEMATHESIS_CONFIG), "run", f"{url}/docs.json"]
    command += ["--checks", "all", "--max-examples", "25"]
    command += ["--seed", "20261126", "--generation-database", "none", "--request-timeout", "20"]
    for header in headers:
        command += ["-H", header]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_schemathesis_finds_nothing(open_server: str, tmp_path: Path) -> None:
    run = _schemathesis(open_server, tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert requests.get(f"{open_server}/readyz", timeout=10).status_code == 200


def test_schemathesis_finds_nothing_with_a_key(keyed_server: str, tmp_path: Path) -> None:
    run = _schemathesis(keyed_server, tmp_path, f"Authorization: Bearer {KEY}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_api_keys(keyed_server: str) -> None:
    body = {"texts": ["a good film"]}
    missing = requests.post(f"{keyed_server}/predict", json=body, timeout=10)
    assert missing.status_code == 401 and missing.json()["error_type"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.post(f"{keyed_server}/predict", json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    right = requests.post(f"{keyed_server}/predict", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert right.status_code == 200 and right.json()[0]["label"] in ("neg", "pos")
    for probe in ("/livez", "/readyz", "/healthz", "/metrics"):
        assert requests.get(f"{keyed_server}{probe}", timeout=10).status_code == 200, probe
    assert requests.get(f"{keyed_server}/model", timeout=10).status_code == 401


def test_bentoml_client_with_a_key(keyed_server: str) -> None:
    import bentoml

    with bentoml.SyncHTTPClient(keyed_server, token=KEY) as client:
        result = client.predict(texts=["a good film", "a dull plot"])
    assert len(result) == 2 and all(item["label"] in ("neg", "pos") for item in result)


def test_request_id_is_echoed_and_generated(open_server: str) -> None:
    sent = requests.post(
        f"{open_server}/predict", json={"texts": ["a film"]}, headers={"X-Request-ID": "req-42"}, timeout=10
    )
    assert sent.headers["X-Request-ID"] == "req-42"
    assert len(requests.post(f"{open_server}/predict", json={"texts": ["x"]}, timeout=10).headers["X-Request-ID"]) == 32
    assert requests.get(f"{open_server}/livez", timeout=10).headers["X-Request-ID"]


def test_swagger_ui_at_docs_and_the_page_at_the_root(open_server: str) -> None:
    docs = requests.get(f"{open_server}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert requests.get(f"{open_server}/static_content/swagger-ui.css", timeout=10).status_code == 200
    page = requests.get(f"{open_server}/", timeout=10)
    assert page.status_code == 200 and "Texts to classify" in page.text


def test_deep_nesting_is_a_400_and_the_server_stays_ready(open_server: str) -> None:
    body = b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = requests.post(f"{open_server}/predict", data=body, timeout=10)
    assert response.status_code == 400 and response.json()["error_type"] == "invalid_json"
    assert requests.get(f"{open_server}/readyz", timeout=10).status_code == 200


def test_a_timeout_is_answered_in_the_error_shape(exported_run: Config, tmp_path: Path) -> None:
    env = _env(exported_run, tmp_path, timeout_s="0.000001")
    with served("service:TextClassifier", env, tmp_path / "serve.log") as url:
        response = requests.post(f"{url}/predict", json={"texts": ["a good film"]}, timeout=30)
        assert response.status_code == 504 and response.json()["error_type"] == "timeout"
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
