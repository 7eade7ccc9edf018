"""The request guard as plain ASGI, around a stand-in app: errors, limits, replayed bodies, headers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from textclf.errors import ERROR_STATUS, ConfigError, RequestError
from textclf.serving.auth import parse_api_keys
from textclf.serving.guard import Access, ModelState, RequestGuard
from textclf.serving.validation import Limits, validate_payload

LIMITS = Limits(max_texts_per_request=3, max_chars_per_text=20, max_body_bytes=500, max_concurrency=4)


KEY = "a-long-enough-test-key-0001"


def _client(
    inner_status: int = 200,
    *,
    inner_error: dict[str, str] | None = None,
    keys: tuple[bytes, ...] = (),
    inner_delay_s: float = 0.0,
    timeout_s: float = 60.0,
    limits: Limits = LIMITS,
) -> tuple[TestClient, list[Any]]:
    seen: list[Any] = []

    async def predict(request: Request) -> Response:
        body = await request.json()
        seen.append((request.headers["content-type"], body))
        if inner_delay_s:
            await asyncio.sleep(inner_delay_s)
        if inner_status != 200:
            return JSONResponse(inner_error or {"error": "An unexpected error"}, status_code=inner_status)
        return JSONResponse([{"label": "x"} for _ in body["texts"]])

    async def docs(request: Request) -> Response:
        spec = {"openapi": "3.0.2", "paths": {"/predict": {"post": {"responses": {"200": {"description": "ok"}}}}}}
        return JSONResponse(spec)

    state = ModelState()
    state.set_model("textclf", "fp32", "abc123", {"name": "textclf"})
    routes = [Route("/predict", predict, methods=["POST"]), Route("/docs.json", docs), Route("/livez", docs)]
    app = Starlette(routes=routes)
    guarded = RequestGuard(app, limits=limits, state=state, access=Access(keys), timeout_s=timeout_s)
    return TestClient(guarded), seen  # type: ignore[arg-type]


def test_valid_request_is_replayed_with_json_content_type_and_headers() -> None:
    client, seen = _client()
    response = client.post(
        "/predict", content=json.dumps({"texts": ["a", "b"]}), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200
    assert response.json() == [{"label": "x"}, {"label": "x"}]
    assert seen == [("application/json", {"texts": ["a", "b"]})]
    assert response.headers["x-model-variant"] == "fp32" and response.headers["x-model-sha256"] == "abc123"


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
def test_validate_payload(payload: Any, status: int, error_type: str) -> None:
    with pytest.raises(RequestError) as caught:
        validate_payload(payload, LIMITS)
    assert (caught.value.status, caught.value.error_type) == (status, error_type)


def test_body_over_the_limit_is_refused_before_parsing() -> None:
    client, seen = _client()
    response = client.post("/predict", content=b"{" + b" " * 600 + b"}")
    assert response.status_code == 413 and response.json()["error_type"] == "body_too_large"
    assert seen == []


def test_inner_overload_becomes_503_with_retry_after() -> None:
    client, _ = _client(inner_status=503)
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 503
    assert response.json() == {"error": response.json()["error"], "error_type": "overloaded"}
    assert response.headers["retry-after"] == "1"


def test_inner_crash_is_an_opaque_500_in_our_shape() -> None:
    client, _ = _client(inner_status=500)
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 500
    assert set(response.json()) == {"error", "error_type"} and "Traceback" not in response.text


def test_the_service_own_errors_pass_with_their_status() -> None:
    # In `on_overlength=error` mode the batcher's tokenizer refuses a long text and the service answers it in our
    # shape (the guard no longer tokenizes on the event loop); a worker whose engine died answers 503 the same way.
    for error_type, status in (("text_too_long", 422), ("engine_unavailable", 503)):
        body = {"error": "texts[1] is too long", "error_type": error_type}
        client, _ = _client(inner_status=status, inner_error=body)
        response = client.post("/predict", json={"texts": ["a", "b"]})
        assert response.status_code == status and response.json() == body
        assert ("retry-after" in response.headers) == (status == 503)


def test_saturation_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = _client()
    guard: RequestGuard = client.app  # type: ignore[assignment]
    guard.in_flight = LIMITS.max_concurrency
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


def test_model_endpoint_and_other_paths() -> None:
    client, _ = _client()
    assert client.get("/model").json() == {"name": "textclf"}
    assert client.get("/elsewhere").status_code == 404  # passed through untouched


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"top_k": 0}, "'top_k' must be an integer of at least 1"),
        ({"top_k": True}, "'top_k' must be an integer"),
        ({"top_k": None}, "'top_k' must be an integer"),
        ({"top_k": "2"}, "'top_k' must be an integer"),
        ({"raw_scores": "yes"}, "'raw_scores' must be true or false"),
        ({"top_n": 1}, "unknown field 'top_n'"),
    ],
)
def test_request_options_are_checked(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        validate_payload({"texts": ["a"], **extra}, LIMITS)
    assert caught.value.status == 422
    request = validate_payload({"texts": ["a"], "top_k": 2, "raw_scores": True}, LIMITS)
    assert (request.texts, request.top_k, request.raw_scores) == (["a"], 2, True)


def test_every_error_type_has_one_status() -> None:
    assert all(400 <= status < 600 for status in ERROR_STATUS.values())
    assert RequestError("too_many_texts", "x").status == 413
    with pytest.raises(ValueError, match="ERROR_STATUS"):
        RequestError("no_such_type", "x")


def test_deeply_nested_json_is_a_quick_400() -> None:
    client, seen = _client(limits=Limits(3, 20, 1_000_000, 4))
    started = time.perf_counter()
    response = client.post("/predict", content=b'{"texts": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert response.status_code == 400 and response.json()["error_type"] == "invalid_json"
    assert time.perf_counter() - started < 10 and seen == []


def test_an_exception_in_validation_is_a_500_json_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import textclf.serving.guard

    client, _ = _client()
    guard: RequestGuard = client.app  # type: ignore[assignment]

    def broken(payload: object, limits: Limits) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(textclf.serving.guard, "validate_payload", broken)
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 500 and response.json()["error_type"] == "internal"
    assert "a bug" not in response.text and response.headers["x-request-id"]
    monkeypatch.undo()
    assert client.post("/predict", json={"texts": ["a"]}).status_code == 200  # and it still serves
    assert guard.in_flight == 0


def test_wrong_methods_get_405_with_allow() -> None:
    client, _ = _client()
    for method, path, allow in (("GET", "/predict", "POST"), ("TRACE", "/predict", "POST"), ("POST", "/model", "GET")):
        response = client.request(method, path)
        assert response.status_code == 405 and response.headers["allow"] == allow
        assert response.json()["error_type"] == "method_not_allowed"


def test_request_id_is_echoed_or_generated() -> None:
    client, _ = _client()
    assert (
        client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.post("/predict", json={"texts": ["a"]}).headers["x-request-id"]
    assert len(generated) == 32 and client.get("/model").headers["x-request-id"] != generated
    newline = client.post("/predict", json={"texts": ["a"]}, headers={"x-request-id": "abc"})
    assert newline.headers["x-request-id"] == "abc"
    from textclf.serving.guard import request_id

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
    assert client.get("/livez").status_code == 200 and client.get("/docs.json").status_code == 200


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


def test_a_slow_prediction_is_a_504_in_our_shape() -> None:
    client, _ = _client(inner_delay_s=1.0, timeout_s=0.05)
    response = client.post("/predict", json={"texts": ["a"]})
    assert response.status_code == 504 and response.json()["error_type"] == "timeout"


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
