"""ASGI middleware in front of the BentoML service: keys, limits, validation, one error body, request ids.

Requests are checked here, before the batcher merges them, so one bad request can never fail a batch that holds
other clients' texts. Every error leaves as `{"error": ..., "error_type": ...}` with the status of
`textclf.errors.ERROR_STATUS`, and nothing can leave a client without an answer: an exception anywhere in here
becomes a 500 JSON body, a prediction past `timeout_s` a 504 JSON body. Every response carries `X-Request-ID`
(the client's, or a new one) and the model's name, variant and sha256.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from textclf import __version__
from textclf.errors import ERROR_STATUS, RequestError
from textclf.serving.auth import is_authorized, needs_key
from textclf.serving.openapi import patch_openapi
from textclf.serving.pages import page
from textclf.serving.protocols import v2
from textclf.serving.protocols.common import Adapter, Call, ModelFacts, Reply, parse_json
from textclf.serving.protocols.hf import HfAdapter
from textclf.serving.validation import Limits, validate_payload

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREDICT_PATH = "/predict"
ROOT_PATH = "/"  # GET: the try-it page; POST: the Hugging Face task API (InferenceClient(base_url) posts here)
MODEL_PATH = "/model"
OPENAPI_PATH = "/docs.json"
DOCS_PATH = "/docs"  # BentoML's Swagger UI, which it serves at "/" where the try-it page lives now
RETRY_AFTER_S = "1"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")  # an id we echo must be safe to log and to send back

# BentoML's own error responses from inside (crashes, its validation), in the project's shape.
_INNER_ERRORS = {
    400: ("invalid_request", "the request does not match the API's schema"),
    503: ("overloaded", "the server is saturated; retry after the Retry-After delay"),
    504: ("timeout", "the prediction took longer than the server's timeout"),
}


@dataclass
class ModelState:
    """Filled by the service instance in this worker process once the model is loaded."""

    info: dict[str, Any] = field(default_factory=dict)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    facts: ModelFacts | None = None  # the model as the other protocols name it
    platform: str = "onnxruntime_onnx"  # v2 metadata: the engine that serves
    is_ready: Any = None  # () -> bool: the engine takes work (the service's batcher is alive)
    # async (texts, TextOptions) -> Answer: the service's batcher, where the other protocols' calls go
    submit: Any = None

    def set_model(self, name: str, variant: str, sha256: str, info: dict[str, Any]) -> None:
        self.info = info
        self.facts = ModelFacts.from_info(info)
        self.headers = [
            (b"x-model-name", name.encode()),
            (b"x-model-variant", variant.encode()),
            (b"x-model-sha256", sha256.encode()),
        ]


@dataclass
class _Exchange:
    """How far one request got: what an error or a deadline may still answer."""

    body_read: bool = False
    started: bool = False  # a response start has gone to the client


@dataclass(frozen=True)
class Access:
    """Who may call what: API keys (none: open) and whether /metrics needs one."""

    api_keys: tuple[bytes, ...] = ()
    metrics_public: bool = True


def error_body(exc: RequestError) -> dict[str, str]:
    return {"error": str(exc), "error_type": exc.error_type}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


def request_id(scope: Scope) -> bytes:
    """The client's `X-Request-ID` when it is a sane token, else a new random one."""
    given = _header(scope, b"x-request-id")
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()


class RequestGuard:
    """Pure ASGI middleware (no body re-parsing by Starlette): check, then replay the body to BentoML."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Limits,
        state: ModelState,
        access: Access | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.app = app
        self.limits = limits
        self.state = state
        self.access = access or Access()
        self.timeout_s = timeout_s
        self.in_flight = 0
        self.hub = HfAdapter("hub", limits)
        self.tei = HfAdapter("tei", limits)
        self.v2 = v2.V2Adapter(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        exchange = _Exchange()

        async def tagged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.started = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid)]}
            await send(message)

        try:
            await self._route(scope, receive, tagged_send, rid, exchange)
        except Exception:  # never a hanging client: whatever failed, the request gets a finished answer
            logger.exception("request %s failed inside the guard", rid.decode())
            if not exchange.started:
                await self._error(tagged_send, RequestError("internal", "the server failed to answer the request"))

    async def _route(self, scope: Scope, receive: Receive, send: Send, rid: bytes, exchange: _Exchange) -> None:
        path, method = scope["path"], scope["method"]
        locked = self.access.api_keys and needs_key(path, method, metrics_public=self.access.metrics_public)
        if locked and not is_authorized(_header(scope, b"authorization"), self.access.api_keys):
            exc = RequestError("unauthorized", "missing or wrong API key: send 'Authorization: Bearer <key>'")
            # Each protocol's clients read its own error shape, a refused key included.
            protocol = self.v2 if path.startswith(v2.PREFIX) else self.hub if path == ROOT_PATH else None
            reply = protocol.error(exc) if protocol is not None else self._error_reply(exc)
            await self._reply(send, reply, [(b"www-authenticate", b'Bearer realm="textclf"')])
            return
        if path == ROOT_PATH and method == "POST":
            await self._predict(scope, receive, send, rid, exchange, self.hub)
            return
        if path == ROOT_PATH and method not in ("GET", "HEAD"):
            exc = RequestError("method_not_allowed", "GET / is the try-it page, POST / the Hugging Face task API")
            await self._error(send, exc, [(b"allow", b"GET, HEAD, POST")])
            return
        if path == v2.PREFIX or path.startswith(v2.PREFIX + "/"):
            await self._v2(scope, receive, send, rid, exchange)
            return
        static = page(path) if method in ("GET", "HEAD") else None
        if static is not None:
            body, content_type = static
            await self._send(send, 200, body, content_type, [(b"cache-control", b"no-cache")])
        elif path == DOCS_PATH and method in ("GET", "HEAD"):
            await self.app({**scope, "path": "/", "raw_path": b"/"}, receive, send)
        elif path == OPENAPI_PATH and method == "GET":
            await self._openapi(scope, receive, send)
        elif path == MODEL_PATH:
            if method not in ("GET", "HEAD"):
                await self._error(send, RequestError("method_not_allowed", "use GET /model"), [(b"allow", b"GET")])
                return
            await self._send_json(send, 200, self.state.info)
        elif path == PREDICT_PATH:
            await self._predict(scope, receive, send, rid, exchange)
        else:
            await self.app(scope, receive, send)

    async def _predict(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        exchange: _Exchange,
        adapter: Adapter | None = None,
    ) -> None:
        """One classification request, native (`adapter` None) or in another protocol's shape; `/predict` bodies
        with `inputs` instead of `texts` are text-embeddings-inference's and answered in its shape."""
        reply_error = adapter.error if adapter is not None else self._error_reply
        if scope["method"] != "POST":
            allow = [(b"allow", b"POST")]
            exc = RequestError("method_not_allowed", f"use POST {scope['path']}")
            await self._reply(send, reply_error(exc), allow)
            return
        if self.in_flight >= self.limits.max_concurrency:
            exc = RequestError("overloaded", "too many requests in flight; retry shortly")
            await self._reply(send, reply_error(exc))
            return
        started = time.perf_counter()
        self.in_flight += 1
        status = 500
        texts: list[str] = []
        body = b""
        try:
            # One deadline for the whole exchange (one timer, no extra task): a client that sends its body slowly
            # must not hold a slot for ever either.
            async with asyncio.timeout(self.timeout_s):
                body = await self._read_body(scope, receive)
                exchange.body_read = True
                if adapter is None:
                    payload = parse_json(body)
                    if isinstance(payload, dict) and "inputs" in payload and "texts" not in payload:
                        adapter, reply_error = self.tei, self.tei.error
                if adapter is None:
                    # Over-length texts (`on_overlength=error`) are refused by the batcher's tokenizer, off the
                    # event loop for long requests: tokenizing here too would cost a second pass on the loop.
                    texts = validate_payload(payload, self.limits).texts
                    status = await self._forward(scope, receive, send, body)
                else:
                    call = adapter.parse(body, _header(scope, v2.HEADER_LENGTH), self._facts())
                    texts = call.texts
                    reply = await self._run_call(call)
                    status = reply.status
                    await self._reply(send, reply)
        except RequestError as exc:
            reply = reply_error(exc)
            status = reply.status
            await self._reply(send, reply)
        except TimeoutError:
            if exchange.started:  # the answer is on its way already: it cannot become a 504 any more
                logger.warning("request %s passed its deadline while its answer was being sent", rid.decode())
            elif not exchange.body_read:
                status = 408
                late = RequestError("request_timeout", f"no complete body in {self.timeout_s:g} s")
                await self._reply(send, reply_error(late))
            else:
                status = 504
                late = RequestError("timeout", f"no prediction within {self.timeout_s:g} s")
                await self._reply(send, reply_error(late))
        finally:
            self.in_flight -= 1
            logger.info(
                "predict request_id=%s protocol=%s status=%d texts=%d bytes=%d latency_ms=%.1f",
                rid.decode(),
                adapter.name if adapter is not None else "textclf",
                status,
                len(texts),
                len(body),
                (time.perf_counter() - started) * 1000,
            )

    def _facts(self) -> ModelFacts:
        if self.state.facts is None:
            raise RequestError("engine_unavailable", "the model is not loaded yet; retry shortly")
        return self.state.facts

    async def _run_call(self, call: Call) -> Reply:
        """Run a protocol's call on the service's batcher and render its answer.

        Straight to the batcher, not through BentoML's `/predict` in-process: that round trip (a second JSON body,
        BentoML's routing and validation, a scores dict per text encoded and decoded again) cost the v2 route 21 %
        and the Hugging Face route 28 % of /predict's req/s at 32 users on a 2-core machine (2026-12-01), where the
        HTTP layer's CPU is the engine's. Every check of the guard has run by now; the batcher's own refusals
        (queue full, a dead engine, an over-length text, too many windows) come back as RequestErrors."""
        if self.state.submit is None:
            raise RequestError("engine_unavailable", "the model is not loaded yet; retry shortly")
        try:
            answer = await self.state.submit(call.texts, call.options)
        except RequestError:
            raise
        except Exception:  # an engine failure: logged, answered in the protocol's shape
            logger.exception("a %d-text protocol call failed in the engine", len(call.texts))
            raise RequestError("internal", "the server failed to classify") from None
        reply = call.render(answer.logits, answer.truncated)
        return Reply(reply.status, reply.body, reply.content_type, [*reply.headers, *self.state.headers])

    async def _v2(self, scope: Scope, receive: Receive, send: Send, rid: bytes, exchange: _Exchange) -> None:
        """The Open Inference Protocol's routes: server and model metadata, health, and inference."""
        path, method = scope["path"], scope["method"]
        route = v2.match_model_route(path)
        try:
            if route is not None and route.action == "/infer":
                v2.check_model(route, self._facts())  # an unknown model is a 404 whatever the body holds
                await self._predict(scope, receive, send, rid, exchange, self.v2)
                return
            if method not in ("GET", "HEAD"):
                raise RequestError("method_not_allowed", f"use GET {path}")
            ready = self.state.facts is not None and (self.state.is_ready is None or bool(self.state.is_ready()))
            if path in (v2.LIVE_PATH, v2.READY_PATH):
                # The protocol answers health with the status alone: 200 true, 4xx false, an empty body.
                healthy = path == v2.LIVE_PATH or ready
                await self._send(send, 200 if healthy else 400, b"", "text/plain", list(self.state.headers))
                return
            if path == v2.PREFIX:
                await self._reply(send, Reply.json(200, v2.server_metadata(__version__)))
                return
            if route is None:
                raise RequestError("not_found", f"no route {path}; see GET /docs.json")
            v2.check_model(route, self._facts())
            if route.action == "/ready":
                await self._send(send, 200 if ready else 400, b"", "text/plain", list(self.state.headers))
            else:
                await self._reply(send, Reply.json(200, v2.model_metadata(self._facts(), self.state.platform)))
        except RequestError as exc:
            extra = [(b"allow", b"GET")] if exc.error_type == "method_not_allowed" else []
            await self._reply(send, self.v2.error(exc), extra)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limits.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError("body_too_large", f"the body has {int(declared)} bytes; the limit is {limit}")
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError("invalid_request", "the client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError("body_too_large", f"the body is over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, body: bytes) -> int:
        """Replay the checked body to BentoML; its errors leave in the project's shape."""
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
        error_chunks: list[bytes] | None = None

        async def wrapped_send(message: Message) -> None:
            nonlocal status, error_chunks
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400:
                    error_chunks = []  # held until complete, then passed on or replaced by our own body
                    return
                await send({**message, "headers": [*message.get("headers", []), *self.state.headers]})
            elif error_chunks is not None:
                error_chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await self._reply(send, self._error_reply(_inner_request_error(status, b"".join(error_chunks))))
            else:
                await send(message)

        await self.app(inner_scope, replay, wrapped_send)
        return status

    async def _collect(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """BentoML's whole answer to a request."""
        chunks: list[bytes] = []
        status = 500

        async def collect(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, collect)
        return status, b"".join(chunks)

    async def _openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's OpenAPI document, completed with the error responses and the routes of this guard."""
        status, document = await self._collect(scope, receive)
        if status != 200:
            raise RuntimeError(f"BentoML answered {status} for {OPENAPI_PATH}")
        spec = patch_openapi(json.loads(document), self.limits, has_keys=bool(self.access.api_keys))
        await self._send_json(send, 200, spec, [])

    def _error_reply(self, exc: RequestError) -> Reply:
        """An error in the project's own shape (`Retry-After` on a 503: overload and a restarting engine pass)."""
        headers = [(b"retry-after", RETRY_AFTER_S.encode())] if exc.status == 503 else []
        return Reply.json(exc.status, error_body(exc), headers)

    async def _error(self, send: Send, exc: RequestError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await self._reply(send, self._error_reply(exc), extra)

    async def _reply(self, send: Send, reply: Reply, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [*reply.headers, *(extra or [])]
        if not any(name == b"x-model-name" for name, _ in headers):
            headers = [*self.state.headers, *headers]
        await self._send(send, reply.status, reply.body, reply.content_type, headers)

    async def _send_json(
        self, send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        extra = headers if headers is not None else list(self.state.headers)
        await self._send(send, status, json.dumps(body).encode(), "application/json", extra)

    async def _send(
        self, send: Send, status: int, data: bytes, content_type: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        base = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": [*base, *headers]})
        await send({"type": "http.response.body", "body": data, "more_body": False})


def _inner_request_error(status: int, body: bytes) -> RequestError:
    """An error from inside as a RequestError: ours (the service's own body) as it is, BentoML's in our terms."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    ours = isinstance(payload, dict) and set(payload) == {"error", "error_type"}
    if ours and ERROR_STATUS.get(str(payload["error_type"])) == status:
        return RequestError(str(payload["error_type"]), str(payload["error"]))
    error_type, text = _INNER_ERRORS.get(status, ("internal", "the server failed to classify"))
    return RequestError(error_type, text)
