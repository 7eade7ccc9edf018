"""The request guard as plain ASGI, around a stand-in BentoML app and a scripted batcher: the route table, errors
in each protocol's shape, limits, the deadline, keys, request ids, headers, and the pipeline's observers."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from textclf.errors import ERROR_STATUS, ConfigError, RequestError
from textclf.inference.predictions import Prediction, predictions
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions
from textclf.serving.auth import Access, parse_api_keys
from textclf.serving.batcher import Answer, EngineUnavailable, QueueFull
from textclf.serving.guard import RequestGuard, request_id
from textclf.serving.limits import Limits
from textclf.serving.protocols.common import Call
from textclf.serving.protocols.native import NativeAdapter
from textclf.serving.state import ModelState

LIMITS = Limits(max_texts_per_request=3, max_chars_per_text=20, max_body_bytes=500, max_concurrency=4)
LABELS = ["neg", "pos"]
KEY = "a-long-enough-test-key-0001"
INFO = {"name": "textclf", "variant": "fp32", "sha256": "abc123", "labels": LABELS, "max_seq_len": 32}


class ScriptedBatcher:
    """Answers each text with logits (0, its length); or fails, or waits, as a test scripts it."""

    def __init__(self, error: BaseException | None = None, delay_s: float = 0.0) -> None:
        self.error = error
        self.delay_s = delay_s
        self.calls: list[tuple[list[str], TextOptions]] = []
        self.alive = True

    async def submit(self, texts: Sequence[str], options: TextOptions = DEFAULT_OPTIONS) -> Answer:
        self.calls.append((list(texts), options))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        logits = np.array([[0.0, float(len(text))] for text in texts], dtype=np.float32)
        return Answer(logits, [False] * len(texts))


def _client(
    batcher: ScriptedBatcher | None = None,
    *,
    keys: tuple[bytes, ...] = (),
    limits: Limits = LIMITS,
    observed: list[tuple[Call[Any], list[Prediction]]] | None = None,
) -> tuple[TestClient, ScriptedBatcher]:
    batcher = batcher or ScriptedBatcher()

    async def docs(request: Request) -> Response:
        spec = {"openapi": "3.0.2", "paths": {"/predict": {"post": {"responses": {"200": {"description": "ok"}}}}}}
        return JSONResponse(spec)

    async def swagger(request: Request) -> Response:
        return PlainTextResponse("swagger ui")

    state = ModelState()
    pipeline = state.set_model(INFO, batcher, functools.partial(predictions, labels=LABELS, threshold=None))
    if observed is not None:
        pipeline.on_answer.append(lambda call, answers, _answer: observed.append((call, answers)))
    routes = [Route("/docs.json", docs), Route("/livez", docs), Route("/", swagger)]
    guarded = RequestGuard(Starlette(routes=routes), limits=limits, state=state, access=Access(keys))
    return TestClient(guarded), batcher  # type: ignore[arg-type]


def test_a_valid_request_runs_once_on_the_batcher_and_names_the_model() -> None:
    client, batcher = _client()
    response = client.post("/predict", content=json.dumps({"texts": ["a", "bbb"]}), headers={"content-type": "x/y"})
    assert response.status_code == 200
    assert [item["label"] for item in response.json()] == ["pos", "pos"]
    assert response.json()[1]["scores"]["pos"] == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-6)
    assert batcher.calls == [(["a", "bbb"], TextOptions())]
    assert response.headers["x-model-variant"] == "fp32" and response.headers["x-model-sha256"] == "abc123"


def test_request_options_reach_the_batcher_and_the_scores() -> None:
    client, batcher = _client()
    body = {"texts": ["abcd"], "top_k": 1, "raw_scores": True, "on_overlength": "chunk", "truncation_direction": "left"}
    assert client.post("/predict", json=body).json() == [{"label": "pos", "score": 4.0, "scores": {"pos": 4.0}}]
    assert batcher.calls[0][1] == TextOptions("chunk", "left")


@pytest.mark.parametrize(
    ("payload", "status", "error_type"),
    [
        ({"texts": ["a"] * 4}, 413, "too_many_texts"),
        ({"texts": ["x" * 21]}, 413, "text_too_large"),
        ({"texts": ["\n\t "]}, 422, "empty_text"),
        ({"texts": None}, 422, "invalid_request"),
        ("just a string", 422, "invalid_request"),
    ],
)
def test_native_checks(payload: Any, status: int, error_type: str) -> None:
    with pytest.raises(RequestError) as caught:
        NativeAdapter(LIMITS).read(payload)
    assert (caught.value.status, caught.value.error_type) == (status, error_type)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"top_k": 0}, "'top_k' must be an integer of at least 1"),
        ({"top_k": True}, "'top_k' must be an integer"),
        ({"top_k": None}, "'top_k' must be an integer"),
        ({"top_k": "2"}, "'top_k' must be an integer"),
        ({"raw_scores": "yes"}, "'raw_scores' must be true or false"),
        ({"on_overlength": None}, "'on_overlength' must be one of"),
        ({"top_n": 1}, "unknown field 'top_n'"),
    ],
)
def test_request_options_are_checked(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        NativeAdapter(LIMITS).read({"texts": ["a"], **extra})
    assert caught.value.status == 422
    call = NativeAdapter(LIMITS).read({"texts": ["a"], "top_k": 2, "raw_scores": True})
    assert (call.texts, call.answer.top_k, call.answer.raw_scores) == (["a"], 2, True)


def test_body_over_the_limit_is_refused_before_parsing() -> None:
    client, batcher = _client()
    response = client.post("/predict", content=b"{" + b" " * 600 + b"}")
    assert response.status_code == 413 and response.json()["error_type"] == "body_too_large"
    assert batcher.calls == []


def test_a_full_queue_is_a_503_with_retry_after() -> None:
    client, _ = _client(ScriptedBatcher(QueueFull("2048 texts are already queued")))
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"error": "2048 texts are already queued", "error_type": "overloaded"}


def test_an_engine_failure_is_an_opaque_500_in_our_shape() -> None:
    client, _ = _client(ScriptedBatcher(RuntimeError("CUDA exploded at /secret/path")))
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 500 and response.json()["error_type"] == "internal"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_the_batchers_own_refusals_keep_their_status() -> None:
    # In `on_overlength=error` mode the batcher's tokenizer refuses a long text (the guard does not tokenize); a
    # worker whose engine died answers 503 (with Retry-After) until it is replaced.
    for error, status in ((RequestError("text_too_long", "texts[1] is too long"), 422), (EngineUnavailable(), 503)):
        client, _ = _client(ScriptedBatcher(error))
        response = client.post("/predict", json={"texts": ["a", "b"]})
        assert response.status_code == status
        assert response.json() == {"error": str(error), "error_type": error.error_type}  # type: ignore[attr-defined]
        assert ("retry-after" in response.headers) == (status == 503)


def test_saturation_answers_503_in_each_protocols_shape() -> None:
    client, batcher = _client()
    guard: RequestGuard = client.app  # type: ignore[assignment]
    guard.in_flight = LIMITS.max_concurrency
    native = client.post("/predict", json={"texts": ["a"]})
    assert native.status_code == 503 and native.headers["retry-after"] == "1"
    tei = client.post("/predict", json={"inputs": "a"})  # before the body is read: the route's own shape
    assert tei.status_code == 503 and tei.json()["error_type"] == "overloaded"
    hub = client.post("/", json={"inputs": "a"})
    assert hub.status_code == 429 and hub.json()["error_type"] == "Overloaded"
    assert batcher.calls == []


def test_tei_bodies_on_predict_are_answered_in_teis_shape_from_one_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    import textclf.serving.protocols.common as common

    decodes: list[bytes] = []
    real = common.parse_json
    monkeypatch.setattr(common, "parse_json", lambda body: decodes.append(body) or real(body))
    client, batcher = _client()
    single = client.post("/predict", json={"inputs": "abc"})
    assert single.status_code == 200 and [item["label"] for item in single.json()] == ["pos", "neg"]  # best first
    assert len(decodes) == 1
    native = client.post("/predict", json={"texts": ["abc"]})
    assert native.status_code == 200 and native.json()[0]["label"] == "pos" and len(decodes) == 2
    pair = client.post("/predict", json={"inputs": ["a", "b"]})
    assert pair.status_code == 422 and pair.json()["error_type"] == "Validation" and "pairs" in pair.json()["error"]
    assert [texts for texts, _ in batcher.calls] == [["abc"], ["abc"]]


def test_model_endpoint_and_other_paths() -> None:
    client, _ = _client()
    model = client.get("/model")
    assert model.json() == INFO and model.headers["x-model-name"] == "textclf"
    assert client.get("/elsewhere").status_code == 404  # BentoML's answer, passed through untouched
    assert client.get("/docs").text == "swagger ui"  # BentoML's Swagger UI, moved from / (the page is there)
    assert "Texts to classify" in client.get("/").text


def test_deeply_nested_json_is_a_quick_400() -> None:
    client, batcher = _client(limits=Limits(3, 20, 1_000_000, 4))
    started = time.perf_counter()
    response = client.post("/predict", content=b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert response.status_code == 400 and response.json()["error_type"] == "invalid_json"
    assert time.perf_counter() - started < 10 and batcher.calls == []


def test_an_exception_in_a_check_is_a_500_json_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = _client()
    guard: RequestGuard = client.app  # type: ignore[assignment]

    def broken(self: NativeAdapter, payload: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(NativeAdapter, "read", broken)
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 500 and response.json()["error_type"] == "internal"
    assert "a bug" not in response.text and response.headers["x-request-id"]
    monkeypatch.undo()
    assert client.post("/predict", json={"texts": ["a"]}).status_code == 200  # and it still serves
    assert guard.in_flight == 0


def test_wrong_methods_get_405_with_allow() -> None:
    client, _ = _client()
    cases = (("GET", "/predict", "POST"), ("TRACE", "/predict", "POST"), ("POST", "/model", "GET"))
    for method, path, allow in (*cases, ("PUT", "/", "GET, HEAD, POST")):
        response = client.request(method, path)
        assert response.status_code == 405 and response.headers["allow"] == allow
        assert response.json()["error_type"] == "method_not_allowed"
    v2 = client.get("/v2/models/textclf/infer")
    assert v2.status_code == 405 and v2.headers["allow"] == "POST" and set(v2.json()) == {"error"}


def test_request_id_is_echoed_or_generated() -> None:
    client, _ = _client()
    given = client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = client.post("/predict", json={"texts": ["a"]}).headers["x-request-id"]
    assert len(generated) == 32 and client.get("/model").headers["x-request-id"] != generated
    assert client.get("/elsewhere").headers["x-request-id"]  # BentoML's answers carry it too
    assert request_id({"headers": [(b"x-request-id", b"abc\n")]}) != b"abc\n"
    unsafe = client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": "a b\x7f" * 50})
    assert unsafe.headers["x-request-id"] != "a b\x7f" * 50  # not echoed: not a sane token


def test_api_keys_lock_everything_but_probes_and_docs() -> None:
    client, _ = _client(keys=parse_api_keys(KEY))
    missing = client.post("/predict", json={"texts": ["a"]})
    assert missing.status_code == 401 and missing.json()["error_type"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.post("/predict", json={"texts": ["a"]}, headers={"authorization": "Bearer " + "x" * len(KEY)})
    assert wrong.status_code == 401 and KEY not in wrong.text
    right = client.post("/predict", json={"texts": ["a"]}, headers={"authorization": f"Bearer {KEY}"})
    assert right.status_code == 200
    assert client.get("/model").status_code == 401
    hub = client.post("/", json={"inputs": "a"})  # each protocol's clients read their own error shape
    assert hub.status_code == 401 and hub.json()["error_type"] == "Unauthorized"
    v2 = client.get("/v2/models/textclf")
    assert v2.status_code == 401 and set(v2.json()) == {"error"}
    assert client.get("/livez").status_code == 200 and client.get("/docs.json").status_code == 200
    assert client.get("/v2/health/live").status_code == 200 and client.get("/").status_code == 200


def test_api_keys_come_from_a_list_or_a_file(tmp_path: Path) -> None:
    assert parse_api_keys(None) == () and parse_api_keys(" ") == ()
    assert parse_api_keys(f"{KEY}, {KEY}x") == (KEY.encode(), f"{KEY}x".encode())
    keys = tmp_path / "keys"
    keys.write_text(f"# team keys\n{KEY}\n\n{KEY}y\n")
    assert parse_api_keys(str(keys)) == (KEY.encode(), f"{KEY}y".encode())
    with pytest.raises(ConfigError, match="shorter than 16"):
        parse_api_keys("short")
    with pytest.raises(ConfigError, match="no key file"):  # an unmounted secret must not become the key
        parse_api_keys(str(tmp_path / "missing" / "keys"))


def test_a_slow_prediction_is_a_504_in_each_protocols_shape() -> None:
    client, _ = _client(ScriptedBatcher(delay_s=1.0), limits=Limits(3, 20, 500, 4, timeout_s=0.05))
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 504 and response.json()["error_type"] == "timeout"
    tei = client.post("/predict", json={"inputs": "a"})
    assert tei.status_code == 504 and tei.json()["error_type"] == "Backend"


def test_a_body_that_never_completes_is_a_408() -> None:
    client, batcher = _client(limits=Limits(3, 20, 500, 4, timeout_s=0.05))
    guard: RequestGuard = client.app  # type: ignore[assignment]
    sent: list[dict[str, Any]] = []

    async def stalled() -> dict[str, Any]:
        await asyncio.sleep(10)
        raise AssertionError("the deadline should have ended the wait")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/predict", "method": "POST", "headers": []}
    asyncio.run(guard(scope, stalled, send))
    assert sent[0]["status"] == 408 and json.loads(sent[1]["body"])["error_type"] == "request_timeout"
    assert batcher.calls == [] and guard.in_flight == 0


def test_observers_see_each_answered_call_once_in_every_protocol() -> None:
    observed: list[tuple[Call[Any], list[Prediction]]] = []
    client, _ = _client(observed=observed)
    assert client.post("/predict", json={"texts": ["a", "bb"]}).status_code == 200
    assert client.post("/predict", json={"inputs": "ccc"}).status_code == 200
    assert client.post("/", json={"inputs": ["d"]}).status_code == 200
    v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["eeeee"]}]}
    assert client.post("/v2/models/textclf/infer", json=v2).status_code == 200
    assert client.post("/predict", json={"texts": [""]}).status_code == 422  # refused: never observed
    assert [call.texts for call, _ in observed] == [["a", "bb"], ["ccc"], ["d"], ["eeeee"]]
    first_answers = observed[0][1]
    assert [p.score for p in first_answers] == pytest.approx([1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(-2.0))])


def test_a_failing_observer_costs_no_answer() -> None:
    client, _ = _client()
    guard: RequestGuard = client.app  # type: ignore[assignment]
    assert guard.state.pipeline is not None

    def broken(call: Call[Any], answers: list[Prediction], answer: Answer) -> None:
        raise ValueError("a broken metric")

    guard.state.pipeline.on_answer.append(broken)
    assert client.post("/predict", json={"texts": ["a"]}).status_code == 200


def test_v2_health_follows_the_engine() -> None:
    client, batcher = _client()
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/v2/models/textclf/ready").content == b""
    batcher.alive = False
    assert client.get("/v2/health/ready").status_code == 400 and client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/models/textclf/ready").status_code == 400
    assert client.get("/v2/models/other").status_code == 404


def test_every_error_type_has_one_status() -> None:
    assert all(400 <= status < 600 for status in ERROR_STATUS.values())
    assert RequestError("too_many_texts", "x").status == 413
    with pytest.raises(ValueError, match="ERROR_STATUS"):
        RequestError("no_such_type", "x")


def test_the_openapi_document_lists_every_status_with_the_error_schema() -> None:
    client, _ = _client(keys=parse_api_keys(KEY))
    spec = client.get("/docs.json").json()
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "405", "408", "413", "422", "429", "500", "503", "504"}
    # /predict also speaks TEI's shape: each error is ours or TEI's.
    refs = [{"$ref": "#/components/schemas/Error"}, {"$ref": "#/components/schemas/HfError"}]
    assert responses["422"]["content"]["application/json"]["schema"] == {"anyOf": refs}
    v2_infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert v2_infer["security"] == [{"bearer": []}] and "404" in v2_infer["responses"]
    assert "security" not in spec["paths"]["/"]["get"] or spec["paths"]["/"]["get"]["security"] == []
    assert spec["paths"]["/"]["post"]["security"] == [{"bearer": []}]
    assert spec["components"]["schemas"]["Error"]["properties"]["error_type"]["enum"] == sorted(ERROR_STATUS)
    assert "get" in spec["paths"]["/model"] and spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert (
        "engine"
        in spec["paths"]["/model"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    )
