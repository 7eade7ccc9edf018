"""Plain ASGI plumbing the guard and the route table share: a finished reply, reading a body within its limit,
sending a reply, and collecting an inner app's answer.

No framework request objects: Starlette's would parse headers and the body again for every request, on the event
loop that also feeds the engine.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from textclf.errors import RequestError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Reply:
    """A finished HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Headers = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any, headers: Headers | None = None) -> Reply:
        """A JSON answer (encoded once, here)."""
        return cls(status, json.dumps(value).encode(), "application/json", headers or [])

    def with_headers(self, extra: Headers) -> Reply:
        """The same answer with `extra` headers after its own."""
        return Reply(self.status, self.body, self.content_type, [*self.headers, *extra])


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header's value (`name` lower-case, as ASGI gives them), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit_bytes: int) -> bytes:
    """The whole request body, refused as soon as it is known to pass `limit_bytes`.

    Raises:
        RequestError: `body_too_large` (declared or sent), or `invalid_request` when the client disconnects first.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise RequestError("body_too_large", f"the body has {int(declared)} bytes; the limit is {limit_bytes}")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError("invalid_request", "the client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise RequestError("body_too_large", f"the body is over {limit_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_reply(send: Send, reply: Reply) -> None:
    """Send a finished answer in one start and one body message."""
    base = [(b"content-type", reply.content_type.encode()), (b"content-length", str(len(reply.body)).encode())]
    await send({"type": "http.response.start", "status": reply.status, "headers": [*base, *reply.headers]})
    await send({"type": "http.response.body", "body": reply.body, "more_body": False})


async def collect(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, bytes]:
    """An inner app's whole answer to a request: its status and body."""
    chunks: list[bytes] = []
    status = 500

    async def keep(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    return status, b"".join(chunks)
