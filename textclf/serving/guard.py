"""The ASGI middleware in front of the BentoML service: request ids, keys, the limits and the deadline, and the
route table (`textclf.serving.routes`) that sends every protocol's request down the one pipeline.

Requests are checked here, before the batcher merges them, so one bad request can never fail a batch that holds
other clients' texts. Every error leaves in its protocol's shape (textclf's `{"error", "error_type"}` with the
status of `textclf.errors.ERROR_STATUS`, TEI's, v2's), and nothing can leave a client without an answer: an
exception anywhere in here becomes a 500 JSON body, a prediction past `timeout_s` a 504. Every response carries
`X-Request-ID` (the client's, or a new one); every answer the guard writes carries the model's name, variant and
sha256.

Why the guard, not BentoML's handler, reads `POST /predict`: the route is also TEI's (`{"inputs": ...}`), so its
body must be decoded before its adapter is known. Decoding it here and handing it to BentoML would decode it
twice (and cost BentoML's routing, a pydantic model and its serializer per request on the event loop the engine
shares); so every shape, native included, is decoded once, checked by its adapter against the one `Limits`,
and answered from here. The service keeps `@bentoml.api predict`, typed with the same limits: it is what BentoML
writes into /docs.json and what its clients (`bentoml.SyncHTTPClient`) call, and its body runs the same
pipeline for in-process callers. The other protocols' routes went straight to the batcher for the same reason:
a round trip through BentoML's `/predict` cost them 21-28 % of req/s at 32 users (2-core machine, 2026-12-01).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass

from textclf.errors import RequestError
from textclf.serving.auth import Access
from textclf.serving.limits import Limits
from textclf.serving.openapi import completed_openapi
from textclf.serving.protocols.common import Body
from textclf.serving.protocols.v2 import HEADER_LENGTH
from textclf.serving.routes import Classify, Forward, OpenApi, Respond, RouteTable
from textclf.serving.state import ModelState
from textclf.serving.wire import ASGIApp, Message, Receive, Reply, Scope, Send, header, read_body, send_reply

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")  # an id we echo must be safe to log and to send back
_BEARER = [(b"www-authenticate", b'Bearer realm="textclf"')]


@dataclass
class _Exchange:
    """How far one request got: what an error or a deadline may still answer."""

    body_read: bool = False
    started: bool = False  # a response start has gone to the client


def request_id(scope: Scope) -> bytes:
    """The client's `X-Request-ID` when it is a sane token, else a new random one."""
    given = header(scope, b"x-request-id")
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex.encode()


class RequestGuard:
    """Pure ASGI middleware (no framework request objects): ids, keys, limits, deadline; then the route table."""

    def __init__(self, app: ASGIApp, *, limits: Limits, state: ModelState, access: Access | None = None) -> None:
        self.app = app
        self.limits = limits
        self.state = state
        self.access = access or Access()
        self.routes = RouteTable(limits, state)
        self.in_flight = 0  # classifying requests of this worker between their first byte and their answer

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
            await self._serve(scope, receive, tagged_send, rid, exchange)
        except Exception:  # never a hanging client: whatever failed, the request gets a finished answer
            logger.exception("request %s failed inside the guard", rid.decode())
            if not exchange.started:
                failed = RequestError("internal", "the server failed to answer the request")
                await self._send(tagged_send, self.routes.native.error(failed))

    async def _serve(self, scope: Scope, receive: Receive, send: Send, rid: bytes, exchange: _Exchange) -> None:
        path, method = scope["path"], scope["method"]
        if not self.access.allows(path, method, header(scope, b"authorization")):
            refused = RequestError("unauthorized", "missing or wrong API key: send 'Authorization: Bearer <key>'")
            await self._send(send, self.routes.shape(path).error(refused).with_headers(_BEARER))
            return
        target = self.routes.resolve(path, method)
        if isinstance(target, Classify):
            await self._classify(scope, receive, send, rid, exchange, target)
        elif isinstance(target, Respond):
            await self._send(send, target.reply)
        elif isinstance(target, OpenApi):
            has_keys = bool(self.access.api_keys)
            await self._send(send, await completed_openapi(self.app, scope, receive, self.limits, has_keys=has_keys))
        elif isinstance(target, Forward) and target.path is not None:
            await self.app({**scope, "path": target.path, "raw_path": target.path.encode()}, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _classify(
        self, scope: Scope, receive: Receive, send: Send, rid: bytes, exchange: _Exchange, target: Classify
    ) -> None:
        """One classification request: read its body, parse it with the route's adapter, run the pipeline, render;
        every error in that adapter's shape."""
        adapter = target.adapter
        if self.in_flight >= self.limits.max_concurrency:
            busy = RequestError("overloaded", "too many requests in flight; retry shortly")
            await self._send(send, adapter.error(busy))
            return
        started = time.perf_counter()
        self.in_flight += 1
        status = 500
        texts: list[str] = []
        size_bytes = 0
        try:
            # One deadline for the whole exchange (one timer, no extra task): a client that sends its body slowly
            # must not hold a slot for ever either.
            async with asyncio.timeout(self.limits.timeout_s):
                raw = await read_body(scope, receive, self.limits.max_body_bytes)
                exchange.body_read = True
                size_bytes = len(raw)
                body = Body(raw, header(scope, HEADER_LENGTH))
                adapter = target.choose(body)
                model, pipeline = self.state.loaded()
                call = adapter.parse(body, model)
                texts = call.texts
                reply = await pipeline.reply(adapter, call)
                status = reply.status
                await self._send(send, reply)
        except RequestError as exc:
            reply = adapter.error(exc)
            status = reply.status
            await self._send(send, reply)
        except TimeoutError:
            if exchange.started:  # the answer is on its way already: it cannot become a 504 any more
                logger.warning("request %s passed its deadline while its answer was being sent", rid.decode())
            else:
                late = (
                    RequestError("timeout", f"no prediction within {self.limits.timeout_s:g} s")
                    if exchange.body_read
                    else RequestError("request_timeout", f"no complete body in {self.limits.timeout_s:g} s")
                )
                reply = adapter.error(late)
                status = reply.status
                await self._send(send, reply)
        finally:
            self.in_flight -= 1
            logger.info(
                "predict request_id=%s protocol=%s status=%d texts=%d bytes=%d latency_ms=%.1f",
                rid.decode(),
                adapter.name,
                status,
                len(texts),
                size_bytes,
                (time.perf_counter() - started) * 1000,
            )

    async def _send(self, send: Send, reply: Reply) -> None:
        """Send an answer the guard wrote, naming the model that serves."""
        headers = [*self.state.headers, *reply.headers]
        await send_reply(send, Reply(reply.status, reply.body, reply.content_type, headers))
