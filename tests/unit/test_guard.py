"""The request guard as plain ASGI, around a stand-in app: errors, limits, replayed bodies, headers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from textclf.guard import Limits, ModelState, RequestError, RequestGuard, validate_payload

LIMITS = Limits(max_texts_per_request=3, max_chars_per_text=20, max_body_bytes=500, max_concurrency=4)


def _client(inner_status: int = 200, overlength_at: int | None = None) -> tuple[TestClient, list[Any]]:
    seen: list[Any] = []

    async def predict(request: Request) -> Response:
        body = await request.json()
        seen.append((request.headers["content-type"], body))
        if inner_status != 200:
            return JSONResponse({"error": "An unexpected error"}, status_code=inner_status)
        return JSONResponse([{"label": "x"} for _ in body["texts"]])

    state = ModelState()
    state.set_model("textclf", "fp32", "abc123", {"name": "textclf"})
    if overlength_at is not None:
        state.count_overlength = lambda texts: overlength_at if len(texts) > overlength_at else None
    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    guarded = RequestGuard(app, limits=LIMITS, state=state)
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


def test_overlength_error_mode_names_the_text() -> None:
    client, seen = _client(overlength_at=1)
    response = client.post("/predict", json={"texts": ["a", "b"]})
    assert response.status_code == 422
    assert response.json() == {
        "error": "texts[1] is longer than the model's max_seq_len",
        "error_type": "text_too_long",
    }
    assert seen == []


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
