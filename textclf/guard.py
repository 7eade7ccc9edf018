"""ASGI middleware in front of the BentoML service: limits, input validation, one error body, model headers.

Requests are checked here, before BentoML's adaptive batcher merges them, so one bad request can never fail a
batch that holds other clients' texts. Every error leaves as `{"error": ..., "error_type": ...}`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREDICT_PATH = "/predict"
MODEL_PATH = "/model"
RETRY_AFTER_S = "1"


@dataclass
class Limits:
    max_texts_per_request: int
    max_chars_per_text: int
    max_body_bytes: int
    max_concurrency: int


@dataclass
class ModelState:
    """Filled by the service instance in this worker process once the model is loaded."""

    info: dict[str, Any] = field(default_factory=dict)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    count_overlength: Callable[[list[str]], int | None] | None = None  # first over-length index, in error mode

    def set_model(self, name: str, variant: str, sha256: str, info: dict[str, Any]) -> None:
        self.info = info
        self.headers = [
            (b"x-model-name", name.encode()),
            (b"x-model-variant", variant.encode()),
            (b"x-model-sha256", sha256.encode()),
        ]


class RequestError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def validate_payload(payload: Any, limits: Limits) -> list[str]:
    """The texts of a valid `{"texts": [...]}` body, or a RequestError naming the field at fault."""
    if not isinstance(payload, dict):
        raise RequestError(422, "invalid_request", 'the body must be a JSON object: {"texts": ["..."]}')
    if "texts" not in payload:
        raise RequestError(422, "invalid_request", "missing field 'texts'")
    extra = sorted(set(payload) - {"texts"})
    if extra:
        raise RequestError(422, "invalid_request", f"unknown field {extra[0]!r}; only 'texts' is accepted")
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise RequestError(422, "invalid_request", f"'texts' must be a list of strings, not {type(texts).__name__}")
    if not texts:
        raise RequestError(422, "invalid_request", "'texts' is empty; send at least one text")
    if len(texts) > limits.max_texts_per_request:
        raise RequestError(
            413, "too_many_texts", f"{len(texts)} texts in one request; the limit is {limits.max_texts_per_request}"
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, "invalid_request", f"texts[{index}] must be a string, not {type(text).__name__}")
        if not text.strip():
            raise RequestError(422, "empty_text", f"texts[{index}] is empty or whitespace only")
        if len(text) > limits.max_chars_per_text:
            raise RequestError(
                413,
                "text_too_large",
                f"texts[{index}] has {len(text)} characters; the limit is {limits.max_chars_per_text}",
            )
    return texts


def _json_response(status: int, body: Any, headers: list[tuple[bytes, bytes]]) -> tuple[Message, Message]:
    data = json.dumps(body).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
    }
    return start, {"type": "http.response.body", "body": data, "more_body": False}


# BentoML's own error responses from inside (batcher overload, timeouts, crashes), in the project's shape.
_INNER_ERRORS = {
    429: ("overloaded", "the server is saturated; retry after the Retry-After delay"),
    503: ("overloaded", "the server is saturated; retry after the Retry-After delay"),
    504: ("timeout", "the prediction took longer than the server's timeout"),
}


class RequestGuard:
    """Pure ASGI middleware (no body re-parsing by Starlette): validate, then replay the body to BentoML."""

    def __init__(self, app: ASGIApp, *, limits: Limits, state: ModelState) -> None:
        self.app = app
        self.limits = limits
        self.state = state
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in (PREDICT_PATH, MODEL_PATH):
            await self.app(scope, receive, send)
            return
        if scope["path"] == MODEL_PATH:
            await self._send_json(send, 200, self.state.info)
            return
        started = time.perf_counter()
        if scope["method"] != "POST":
            await self._error(send, RequestError(405, "method_not_allowed", "use POST /predict"))
            return
        if self.in_flight >= self.limits.max_concurrency:
            await self._error(send, RequestError(503, "overloaded", "too many requests in flight; retry shortly"))
            return
        self.in_flight += 1
        status = 500
        texts: list[str] = []
        body = b""
        try:
            body = await self._read_body(scope, receive)
            texts = self._parse(body)
            status = await self._forward(scope, receive, send, body)
        except RequestError as exc:
            status = exc.status
            await self._error(send, exc)
        finally:
            self.in_flight -= 1
            logger.info(
                "predict status=%d texts=%d bytes=%d latency_ms=%.1f",
                status,
                len(texts),
                len(body),
                (time.perf_counter() - started) * 1000,
            )

    def _parse(self, body: bytes) -> list[str]:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        texts = validate_payload(payload, self.limits)
        if self.state.count_overlength is not None:
            index = self.state.count_overlength(texts)
            if index is not None:
                raise RequestError(422, "text_too_long", f"texts[{index}] is longer than the model's max_seq_len")
        return texts

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limits.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise RequestError(413, "body_too_large", f"the body has {int(value)} bytes; the limit is {limit}")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "invalid_request", "the client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, "body_too_large", f"the body is over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> int:
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only a disconnect can come

        headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        inner_scope = {**scope, "headers": headers}
        status = 500
        rewriting = False

        async def wrapped_send(message: Message) -> None:
            nonlocal status, rewriting
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400:
                    rewriting = True  # replaced by our own error body once the inner body is drained
                    return
                message = {**message, "headers": [*message.get("headers", []), *self.state.headers]}
                await send(message)
            elif rewriting:
                if not message.get("more_body"):
                    error_type, text = _INNER_ERRORS.get(status, ("internal", "the server failed to classify"))
                    await self._error(send, RequestError(status, error_type, text))
            else:
                await send(message)

        await self.app(inner_scope, replay, wrapped_send)
        return status

    async def _error(self, send: Send, exc: RequestError) -> None:
        headers = list(self.state.headers)
        if exc.status in (429, 503):
            headers.append((b"retry-after", RETRY_AFTER_S.encode()))
        await self._send_json(send, exc.status, {"error": str(exc), "error_type": exc.error_type}, headers)

    async def _send_json(
        self, send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        start, content = _json_response(status, body, headers if headers is not None else list(self.state.headers))
        await send(start)
        await send(content)
