"""A real `bentoml serve` of service.py on loopback, with the tiny exported model, checked over real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.serving import PROJECT_ROOT, refused_at_start, serve_env, served
from tests.tiny import tiny_texts
from textclf.config import Config
from textclf.inference.runtime import Classifier
from textclf.paths import ONNX_DIR


@pytest.fixture(scope="module")
def server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {
        "TEXTCLF_ARTIFACTS": str(exported_run.run_dir),
        "BENTOML_HOME": str(home),
        "TEXTCLF_MAX_TEXTS_PER_REQUEST": "8",
        "TEXTCLF_MAX_CHARS_PER_TEXT": "500",
        "TEXTCLF_MAX_BODY_BYTES": "20000",
    }
    with served("service:TextClassifier", env, home / "serve.log") as url:
        yield url


def _predict(url: str, payload: object, **kwargs: object) -> requests.Response:
    return requests.post(f"{url}/predict", json=payload, timeout=30, **kwargs)  # type: ignore[arg-type]


def _histogram(url: str, name: str) -> tuple[float, float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    total = sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", text, re.M))
    count = sum(float(v) for v in re.findall(rf"^{name}_count(?:{{[^}}]*}})? (\S+)$", text, re.M))
    return total, count


def test_predictions_equal_the_runtime_and_keep_order(server: str, exported_run: Config) -> None:
    texts = [t for t, _ in tiny_texts(7, seed=11)]
    texts[3] = " ".join([texts[3]] * 4)  # mixed lengths inside one request
    response = _predict(server, {"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = Classifier.from_run(exported_run.run_dir).predict(texts)
    assert [item["label"] for item in body] == [p.label for p in expected]
    for item, prediction in zip(body, expected, strict=True):
        assert item["score"] == pytest.approx(prediction.score, abs=1e-5)
        assert item["scores"] == pytest.approx(prediction.scores, abs=1e-5)
        assert item["score"] == max(item["scores"].values())


def test_response_names_the_model(server: str, exported_run: Config) -> None:
    from textclf.artifacts.manifest import require_export

    export = require_export(exported_run.run_dir)
    variant = export.serving_variant
    assert variant is not None
    response = _predict(server, {"texts": ["a good film"]})
    assert response.headers["X-Model-Name"] == "textclf"
    assert response.headers["X-Model-Variant"] == variant
    assert response.headers["X-Model-Sha256"] == export.variants[variant].files["model.onnx"].sha256
    info = requests.get(f"{server}/model", timeout=10).json()
    assert info["variant"] == variant and info["labels"] == ["neg", "pos"]
    # The engine that runs, by its own name and threads (not "ORT threads" for an OpenVINO variant).
    engine = Classifier.from_run(exported_run.run_dir).engine
    assert (info["engine"], info["engine_threads"]) == (engine.name, engine.threads)
    assert info["engine"] in info["engine_detail"] and info["engine_threads"] >= 1


def test_top_k_and_raw_scores_change_the_response_as_documented(server: str, exported_run: Config) -> None:
    texts = ["a good and lovely film", "a dull plot", "the acting was fine"]
    classifier = Classifier.from_run(exported_run.run_dir)
    logits, _ = classifier.logits(texts)
    plain = _predict(server, {"texts": texts}).json()
    top = _predict(server, {"texts": texts, "top_k": 1}).json()
    raw = _predict(server, {"texts": texts, "raw_scores": True, "top_k": 2}).json()
    for p, t, r, row in zip(plain, top, raw, logits, strict=True):
        assert t["label"] == p["label"] and t["scores"] == {p["label"]: pytest.approx(p["score"])}
        assert r["label"] == p["label"] and r["score"] == pytest.approx(float(row.max()), abs=1e-4)
        assert list(r["scores"].values()) == sorted(r["scores"].values(), reverse=True)  # best first
        assert r["scores"] == pytest.approx(dict(zip(classifier.labels, row.tolist(), strict=True)), abs=1e-4)
    for bad in ({"top_k": 0}, {"top_k": "1"}, {"raw_scores": "yes"}):
        response = _predict(server, {"texts": texts, **bad})
        assert response.status_code == 422 and response.json()["error_type"] == "invalid_request", bad


def test_long_text_is_truncated_and_flagged(server: str) -> None:
    long_text = " ".join(["good film"] * 40)  # > 32 tokens, the tiny model's max_seq_len
    body = _predict(server, {"texts": [long_text, "a good film"]}).json()
    assert body[0]["truncated"] is True
    assert "truncated" not in body[1]


def test_concurrent_single_requests_all_succeed_and_are_batched(server: str) -> None:
    _, batches_before = _histogram(server, "textclf_batch_size")
    texts_before, _ = _histogram(server, "textclf_batch_size")
    texts = [t for t, _ in tiny_texts(64, seed=2)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda text: _predict(server, {"texts": [text]}), texts))
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert all(len(r.json()) == 1 for r in responses)
    texts_after, batches_after = _histogram(server, "textclf_batch_size")
    assert texts_after - texts_before == len(texts)
    assert batches_after - batches_before < len(texts), "the batcher ran concurrent requests' texts together"


BAD_INPUTS = [
    ({"texts": []}, 422, "invalid_request", "'texts' is empty"),
    ({"texts": ["   "]}, 422, "empty_text", "texts[0] is empty"),
    ({"texts": ["ok", ""]}, 422, "empty_text", "texts[1]"),
    ({"text": ["a"]}, 422, "invalid_request", "missing field 'texts'"),
    ({"texts": ["a"], "extra": 1}, 422, "invalid_request", "unknown field 'extra'"),
    ({"texts": "a good film"}, 422, "invalid_request", "'texts' must be a list"),
    ({"texts": ["a", 3]}, 422, "invalid_request", "texts[1] must be a string"),
    (["a good film"], 422, "invalid_request", "JSON object"),
    ({"texts": ["a"] * 9}, 413, "too_many_texts", "9 texts"),
    ({"texts": ["x" * 501]}, 413, "text_too_large", "texts[0] has 501 characters"),
    ({"texts": ["a"], "pad": "y" * 20000}, 413, "body_too_large", "limit is 20000"),
]


@pytest.mark.parametrize(("payload", "status", "error_type", "message"), BAD_INPUTS)
def test_bad_input_gets_its_status_and_json_error(
    server: str, payload: object, status: int, error_type: str, message: str
) -> None:
    response = _predict(server, payload)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}
    assert body["error_type"] == error_type
    assert message in body["error"]
    assert "Traceback" not in response.text


def test_malformed_json_and_wrong_method(server: str) -> None:
    response = requests.post(f"{server}/predict", data=b"{not json", timeout=10)
    assert response.status_code == 400 and response.json()["error_type"] == "invalid_json"
    response = requests.post(f"{server}/predict", data=b"\xff\xfe", timeout=10)
    assert response.status_code == 400 and response.json()["error_type"] == "invalid_json"
    response = requests.get(f"{server}/predict", timeout=10)
    assert response.status_code == 405 and response.json()["error_type"] == "method_not_allowed"


def test_server_stays_ready_after_bad_input(server: str) -> None:
    for payload, *_ in BAD_INPUTS:
        _predict(server, payload)
    assert requests.get(f"{server}/readyz", timeout=10).status_code == 200
    assert requests.get(f"{server}/livez", timeout=10).status_code == 200
    assert _predict(server, {"texts": ["a good film"]}).status_code == 200


def test_metrics_expose_the_new_histograms(server: str) -> None:
    _predict(server, {"texts": ["a good film", "a dull plot"]})
    text = requests.get(f"{server}/metrics", timeout=10).text
    for name in ("textclf_tokenize_seconds", "textclf_infer_seconds", "textclf_batch_size"):
        assert f"{name}_bucket" in text, name
    assert _histogram(server, "textclf_infer_seconds")[1] >= 1


def test_tampered_model_is_refused_at_start(tmp_path: Path, exported_run: Config) -> None:
    from textclf.artifacts.manifest import require_export

    run_dir = tmp_path / "run"
    shutil.copytree(exported_run.run_dir, run_dir)
    variant = require_export(run_dir).serving_variant
    assert variant is not None
    model = run_dir / ONNX_DIR / variant / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    env = {"TEXTCLF_ARTIFACTS": str(run_dir), "BENTOML_HOME": str(tmp_path / "home")}
    log = refused_at_start("service:TextClassifier", env, tmp_path / "log", says="does not match the manifest")
    assert f"{variant}/model.onnx" in log


def test_overlength_error_mode_is_a_422_naming_the_text(exported_run: Config, tmp_path: Path) -> None:
    # The one over-length check is the batcher's tokenizer (`Classifier.encode`), off the event loop for long
    # requests; the guard does not tokenize. Both tokenizing paths are covered: inline and in a thread.
    long_text = " ".join(["good film"] * 40)  # > 32 tokens, the tiny model's max_seq_len
    env = serve_env(exported_run.run_dir, tmp_path / "home", on_overlength="error")
    with served("service:TextClassifier", env, tmp_path / "log") as url:
        for texts in (["a good film", long_text], ["a good film", "x " * 4500, "a dull plot"]):
            response = _predict(url, {"texts": texts})
            assert response.status_code == 422, response.text
            assert response.json()["error_type"] == "text_too_long" and "texts[1]" in response.json()["error"]
        assert _predict(url, {"texts": ["a good film", "a dull plot"]}).status_code == 200


# The service's typed `predict` called in-process, as BentoML's local callers do (over HTTP the guard answers
# POST /predict through the same adapter and pipeline). A fresh interpreter: the service module reads its config
# and patches BentoML when it is imported.
IN_PROCESS = """
import asyncio, json, sys
import service

async def main():
    svc = service.TextClassifier()
    try:
        answers = []
        for fields in ({"texts": sys.argv[1:], "top_k": 1}, {"texts": sys.argv[1:], "on_overlength": "error"}):
            response = await svc.predict(**fields)
            answers.append({"status": response.status_code, "body": json.loads(response.body),
                            "variant": response.headers["x-model-variant"]})
        print(json.dumps(answers))
    finally:
        svc.batcher.close()

asyncio.run(main())
"""


def test_the_typed_predict_method_runs_the_same_pipeline(exported_run: Config, tmp_path: Path) -> None:
    texts = ["a good and lovely film", " ".join(["good film"] * 40)]  # the second is over the 32-token window
    env = {**os.environ, **serve_env(exported_run.run_dir, tmp_path / "home"), "TEXTCLF_WORKERS": "1"}
    command = [sys.executable, "-c", IN_PROCESS, *texts]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    top, refused = json.loads(done.stdout.strip().splitlines()[-1])
    expected = Classifier.from_run(exported_run.run_dir).predict(texts)
    assert top["status"] == 200 and [item["label"] for item in top["body"]] == [p.label for p in expected]
    assert [item["scores"] for item in top["body"]] == [{p.label: pytest.approx(p.score, abs=1e-5)} for p in expected]
    assert top["body"][1]["truncated"] is True and "truncated" not in top["body"][0]
    assert top["variant"] == Classifier.from_run(exported_run.run_dir).variant
    assert refused["status"] == 422 and refused["body"]["error_type"] == "text_too_long"
    assert "texts[1]" in refused["body"]["error"]
