"""Confidence served (issue 36) by a real `bentoml serve` of the tiny model: the deploy's `serve.target_accuracy`
resolved at start from the variant's validation curve, `abstained` on the native route and as v2's BOOL output, a
request's own `min_confidence` on every protocol, the refusals in each protocol's shape, `GET /model`, and a start
refused for a target no threshold reaches.

The tiny run's validation split is too small to fit a temperature (the record says so and it serves raw scores), so
the served copy carries a hand-made fitted record: temperature 2 and a validation curve whose 0.9 point sits at the
median top probability of the texts below, so that some of them abstain and some do not.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.serving import refused_at_start, serve_env, served
from tests.tiny import tiny_texts
from textclf.artifacts.confidence import ConfidenceRecord, CurvePoint
from textclf.artifacts.manifest import read_manifest, write_manifest
from textclf.config import Config
from textclf.inference.runtime import Classifier

TEXTS = [t for t, _ in tiny_texts(8, seed=31)]
TEMPERATURE = 2.0
TARGET = 0.9  # reached on the hand-made curve (0.93 at its upper point)
UNREACHABLE = 0.99


@pytest.fixture(scope="module")
def calibrated(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A copy of the tiny run whose serving variant carries a fitted record, and the curve's threshold for TARGET."""
    run_dir = tmp_path_factory.mktemp("calibrated") / "run"
    shutil.copytree(exported_run.run_dir, run_dir)
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.export is not None and manifest.export.serving_variant
    variant = manifest.export.variants[manifest.export.serving_variant]
    logits, _ = Classifier.from_run(run_dir).logits(TEXTS)
    scaled = np.exp(logits / TEMPERATURE) / np.exp(logits / TEMPERATURE).sum(axis=1, keepdims=True)
    threshold = round(float(np.median(scaled.max(axis=1))), 6)
    curve = [
        CurvePoint(threshold=0.5, coverage=1.0, accuracy=0.8),
        CurvePoint(threshold=threshold, coverage=0.5, accuracy=0.93),
    ]
    variant.confidence = ConfidenceRecord(temperature=TEMPERATURE, validation_texts=200, validation_curve=curve)
    write_manifest(run_dir, manifest)
    return run_dir, threshold


@pytest.fixture(scope="module")
def server(calibrated: tuple[Path, float], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("confidence-serve")
    with served(
        "service:TextClassifier", serve_env(calibrated[0], home, target_accuracy=str(TARGET)), home / "log"
    ) as url:
        yield url


@pytest.fixture(autouse=True)
def _hub_client_may_call_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """InferenceClient refuses every call under HF_HUB_OFFLINE=1, loopback included: lifted here, for 127.0.0.1."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _predict(url: str, **fields: Any) -> list[dict[str, Any]]:
    response = requests.post(f"{url}/predict", json={"texts": TEXTS, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_get_model_names_the_temperature_and_the_threshold_in_force(
    server: str, calibrated: tuple[Path, float]
) -> None:
    model = requests.get(f"{server}/model", timeout=10).json()
    assert model["temperature"] == TEMPERATURE and model["label_thresholds"] is None
    assert model["selective_threshold"] == {
        "min_confidence": calibrated[1],
        "source": "target_accuracy",
        "target_accuracy": TARGET,
        "validation_coverage": 0.5,
        "validation_accuracy": 0.93,
    }


def test_native_answers_abstain_as_the_runtime_does(server: str, calibrated: tuple[Path, float]) -> None:
    expected = Classifier.from_run(calibrated[0], target_accuracy=TARGET).predict(TEXTS)
    body = _predict(server)
    assert [item["abstained"] for item in body] == [p.abstained for p in expected]
    assert {item["abstained"] for item in body} == {True, False}  # the threshold splits these texts
    assert [item["score"] for item in body] == pytest.approx([p.score for p in expected], abs=1e-5)
    # A request's own threshold replaces the deploy's; label and scores stay whichever answers abstain.
    none, every = _predict(server, min_confidence=0), _predict(server, min_confidence=1)
    assert [i["abstained"] for i in none] == [False] * len(TEXTS) and [i["abstained"] for i in every] == [True] * len(
        TEXTS
    )
    assert [i["scores"] for i in none] == [i["scores"] for i in body] == [i["scores"] for i in every]


@pytest.mark.parametrize("raw", [b'"high"', b"1.5", b"-0.1", b"true", b"null", b"NaN", b"[0.5]"])
def test_a_bad_native_min_confidence_is_a_422_naming_the_field(server: str, raw: bytes) -> None:
    body = b'{"texts": ["a good film"], "min_confidence": ' + raw + b"}"
    response = requests.post(f"{server}/predict", data=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error_type"] == "invalid_request" and "min_confidence" in response.json()["error"]


def test_hf_scores_are_calibrated_and_take_min_confidence_without_a_new_field(server: str) -> None:
    from huggingface_hub import InferenceClient

    native = _predict(server)
    client = InferenceClient(base_url=server)
    for text, item in zip(TEXTS[:3], native[:3], strict=True):
        got = client.text_classification(text)
        assert {e.label: e.score for e in got} == pytest.approx(item["scores"], abs=1e-6)
    logits = np.array([list(i["scores"].values()) for i in _predict(server, raw_scores=True)])
    sigmoid: dict[str, Any] = {
        "inputs": TEXTS[0],
        "parameters": {"function_to_apply": "sigmoid", "min_confidence": 0.99},
    }
    answer = requests.post(server, json=sigmoid, timeout=30).json()
    expected = 1 / (1 + np.exp(-logits[0] / TEMPERATURE))  # the other function of the scaled logits
    assert {p["label"]: p["score"] for p in answer[0]} == pytest.approx(
        dict(zip(native[0]["scores"], expected, strict=True))
    )
    assert all(set(p) == {"label", "score"} for p in answer[0])
    refused = requests.post(f"{server}/predict", json={"inputs": "a", "parameters": {"min_confidence": 2}}, timeout=30)
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"
    assert refused.json()["error"].startswith("parameters.min_confidence must be a number in [0, 1]")


def test_v2_answers_a_bool_abstained_output_tritonclient_reads(server: str) -> None:
    import tritonclient.http as triton

    native = _predict(server)
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    meta = client.get_model_metadata("textclf")
    assert meta["outputs"][-1] == {"name": "abstained", "datatype": "BOOL", "shape": [-1]}
    assert meta["parameters"]["temperature"] == TEMPERATURE
    tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    for binary in (False, True):
        wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "abstained")]
        result = client.infer("textclf", [tensor], outputs=wanted)
        assert result.as_numpy("abstained").tolist() == [item["abstained"] for item in native]
    own = client.infer("textclf", [tensor], parameters={"min_confidence": 0.0})
    assert own.as_numpy("abstained").tolist() == [False] * len(TEXTS)
    bad: dict[str, Any] = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
        "parameters": {"min_confidence": "x"},
    }
    refused = requests.post(f"{server}/v2/models/textclf/infer", json=bad, timeout=30)
    assert refused.status_code == 400 and set(refused.json()) == {"error"}
    assert "parameters.min_confidence" in refused.json()["error"]


def test_docs_json_documents_min_confidence_and_abstained(server: str) -> None:
    spec = requests.get(f"{server}/docs.json", timeout=10).json()
    request = spec["components"]["schemas"]["predict__Input"]  # BentoML's schema of the typed signature
    field = request["properties"]["min_confidence"]
    assert (field["minimum"], field["maximum"]) == (0, 1) and field["type"] == "number"
    answer = spec["components"]["schemas"]["Prediction"]["properties"]["abstained"]
    assert "min_confidence" in answer["description"]
    model = spec["paths"]["/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"temperature", "selective_threshold"} <= set(model["properties"])


def test_a_target_no_threshold_reaches_is_refused_at_start(calibrated: tuple[Path, float], tmp_path: Path) -> None:
    env = serve_env(calibrated[0], tmp_path / "home", target_accuracy=str(UNREACHABLE))
    says = f"target_accuracy {UNREACHABLE} is not reached on validation"
    assert "best reachable is 0.9300" in refused_at_start("service:TextClassifier", env, tmp_path / "log", says)


def test_both_settings_at_once_stop_the_server_naming_them(calibrated: tuple[Path, float], tmp_path: Path) -> None:
    env = serve_env(calibrated[0], tmp_path / "home", min_confidence="0.6", target_accuracy=str(TARGET))
    says = "min_confidence and target_accuracy are both set; set at most one"
    refused_at_start("service:TextClassifier", env, tmp_path / "log", says)
