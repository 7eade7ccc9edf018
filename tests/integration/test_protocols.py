"""Other servers' clients against a real `bentoml serve` (tiny model, loopback): huggingface_hub's
InferenceClient, tritonclient's HTTP client, and text-embeddings-inference's documented request shapes, each
giving what `POST /predict` gives for the same texts, on the same batcher."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from tests.serving import serve_env, served
from tests.tiny import tiny_texts
from textclf.config import Config

KEY = "protocol-test-key-0123456789"
TEXTS = [t for t, _ in tiny_texts(5, seed=23)]


@pytest.fixture(scope="module")
def server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("protocols")
    env = serve_env(exported_run.run_dir, home, max_texts_per_request="8", max_chars_per_text="2000")
    with served("service:TextClassifier", env, home / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("protocols-keyed")
    with served("service:TextClassifier", serve_env(exported_run.run_dir, home, api_keys=KEY), home / "s.log") as url:
        yield url


@pytest.fixture(autouse=True)
def _hub_client_may_call_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run with HF_HUB_OFFLINE=1 (no hub here), which also stops InferenceClient from calling our own
    loopback server; it is lifted for these tests only, which reach nothing but 127.0.0.1."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _native(url: str, texts: list[str], **fields: object) -> list[dict[str, object]]:
    response = requests.post(f"{url}/predict", json={"texts": texts, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json())


def _ready(url: str) -> None:
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200


def _as_ranked(item: dict[str, object], k: int | None = None) -> list[tuple[str, float]]:
    scores = item["scores"]
    assert isinstance(scores, dict)
    return sorted(scores.items(), key=lambda pair: -pair[1])[:k]


@pytest.mark.parametrize("top_k", [None, 1])
def test_inference_client_text_classification_equals_predict(server: str, top_k: int | None) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=server)
    for text, native in zip(TEXTS, _native(server, TEXTS), strict=True):
        got = client.text_classification(text, top_k=top_k)
        expected = _as_ranked(native, top_k)
        assert [e.label for e in got] == [label for label, _ in expected]
        assert [e.score for e in got] == pytest.approx([score for _, score in expected], abs=1e-6)


def test_inference_client_with_an_api_key(keyed_server: str) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    got = InferenceClient(base_url=keyed_server, token=KEY).text_classification("a good film")
    assert {e.label for e in got} == {"neg", "pos"}
    with pytest.raises(HfHubHTTPError) as caught:
        InferenceClient(base_url=keyed_server, token="wrong-key-0123456789").text_classification("a good film")
    assert caught.value.response.status_code == 401
    assert requests.get(f"{keyed_server}/", timeout=10).status_code == 200  # the try-it page stays open
    assert requests.get(f"{keyed_server}/v2/health/ready", timeout=10).status_code == 200  # a probe
    assert requests.get(f"{keyed_server}/v2/models/textclf", timeout=10).status_code == 401


def test_tritonclient_with_an_api_key(keyed_server: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(keyed_server.removeprefix("http://"))
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a good film"], dtype=np.object_))
    result = client.infer("textclf", [tensor], headers={"Authorization": f"Bearer {KEY}"})
    assert result.as_numpy("label")[0] in (b"neg", b"pos", "neg", "pos")
    with pytest.raises(InferenceServerException) as caught:
        client.infer("textclf", [tensor])
    assert "API key" in str(caught.value)  # v2's own error shape, which the client reads


def test_tritonclient_health_metadata_and_infer_equal_predict(server: str, exported_run: Config) -> None:
    import tritonclient.http as triton

    from textclf.artifacts.manifest import require_export

    client = triton.InferenceServerClient(server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("textclf")
    assert "classification" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("textclf")
    export = require_export(exported_run.run_dir)
    variant = export.serving_variant
    assert variant is not None
    sha256 = export.variants[variant].files["model.onnx"].sha256
    assert meta["versions"] == [sha256[:12]] and meta["parameters"]["variant"] == variant
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities", "truncated"]
    native = _native(server, TEXTS)
    for binary in (True, False):
        tensor = triton.InferInput("text", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=binary)
        wanted = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")]
        result = client.infer("textclf", [tensor], outputs=wanted, request_id="r-7")
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [item["label"] for item in native]
        expected = np.array([[item["scores"]["neg"], item["scores"]["pos"]] for item in native])  # type: ignore[index]
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
        assert result.get_response()["id"] == "r-7"
    top = client.infer(
        "textclf", [tensor], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False, class_count=1)]
    )
    cells = [v.decode() if isinstance(v, bytes) else v for v in top.as_numpy("probabilities").reshape(-1)]
    assert [cell.split(":")[2] for cell in cells] == [item["label"] for item in native]


def test_tei_request_shapes_and_statuses(server: str) -> None:
    native = _native(server, TEXTS[:2])
    single = requests.post(f"{server}/predict", json={"inputs": TEXTS[0]}, timeout=30)
    assert single.status_code == 200
    assert [(p["label"], pytest.approx(p["score"], abs=1e-6)) for p in single.json()] == _as_ranked(native[0])
    batch = requests.post(f"{server}/predict", json={"inputs": [[TEXTS[0]], [TEXTS[1]]]}, timeout=30).json()
    assert [[p["label"] for p in item] for item in batch] == [[label for label, _ in _as_ranked(n)] for n in native]
    raw = requests.post(f"{server}/predict", json={"inputs": TEXTS[0], "raw_scores": True}, timeout=30).json()
    logits = _native(server, TEXTS[:1], raw_scores=True)[0]["scores"]
    assert {p["label"]: p["score"] for p in raw} == pytest.approx(logits, abs=1e-6)
    long_text = " ".join(["film"] * 300)  # past the tiny model's max_seq_len
    refused = requests.post(f"{server}/predict", json={"inputs": long_text, "truncate": False}, timeout=30)
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"
    cut = requests.post(f"{server}/predict", json={"inputs": long_text, "truncate": True}, timeout=30)
    assert cut.status_code == 200
    # Cut from the left, a text keeps its end: another answer than its beginning, and the native field's answer.
    two_halves = " ".join(["good"] * 150 + ["dull"] * 150)
    body = {"inputs": two_halves, "truncation_direction": "Left", "raw_scores": True}
    left = {p["label"]: p["score"] for p in requests.post(f"{server}/predict", json=body, timeout=30).json()}
    native_left = _native(server, [two_halves], raw_scores=True, truncation_direction="left")[0]
    native_right = _native(server, [two_halves], raw_scores=True)[0]
    assert native_left["truncated"] and left == pytest.approx(native_left["scores"], abs=1e-6)
    assert native_left["scores"] != pytest.approx(native_right["scores"], abs=1e-4)
    _ready(server)


BAD_REQUESTS = [
    ("post", "/", b'{"inputs": ["a", 3]}', 422),
    ("post", "/", b"not json", 400),
    ("post", "/predict", b'{"inputs": ["a", "b"]}', 422),  # a TEI text pair
    ("post", "/predict", b'{"inputs": "x", "parameters": {"top_k": -1}}', 422),
    ("post", "/v2/models/textclf/infer", b'{"inputs": []}', 400),
    (
        "post",
        "/v2/models/textclf/infer",
        b'{"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}',
        400,
    ),
    ("post", "/v2/models/nope/infer", b'{"inputs": []}', 404),
    ("get", "/v2/models/nope", b"", 404),
    ("get", "/v2/models/textclf/versions/0", b"", 404),
    ("post", "/v2/models/textclf", b"", 405),
    ("get", "/v2/models/textclf/infer", b"", 405),
    ("get", "/v2/nothing", b"", 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_REQUESTS)
def test_bad_input_on_every_route_is_a_4xx_in_that_protocols_shape(
    server: str, method: str, path: str, body: bytes, status: int
) -> None:
    response = requests.request(method, f"{server}{path}", data=body, timeout=30)
    assert response.status_code == status, response.text
    payload = response.json()
    expected_keys = {"error"} if path.startswith("/v2") else {"error", "error_type"}
    assert set(payload) == expected_keys and payload["error"]
    assert response.headers["X-Request-ID"]
    _ready(server)


def test_v2_health_answers_with_the_status_alone(server: str) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/textclf/ready"):
        response = requests.get(f"{server}{path}", timeout=10)
        assert response.status_code == 200 and response.content == b"", path
    meta = requests.get(f"{server}/v2", timeout=10).json()
    assert meta["name"] == "textclf" and json.dumps(meta)
