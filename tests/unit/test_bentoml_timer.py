"""Why textclf/bentoml_patch.py exists, re-measured on the installed BentoML: its request timer outlives the request.

If this fails, BentoML cancels its timer now: re-measure the GC pauses under load and drop the patch.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib.util
import weakref
from typing import Any

from textclf.serving.bentoml_patch import PassThroughTimeout

SPAN: contextvars.ContextVar[object] = contextvars.ContextVar("span")  # as OpenTelemetry keeps a request's span
REQUESTS = 200


def _bentoml_timeout_middleware() -> type:
    """BentoML's own class, loaded from its file afresh: the module's name may already point at the pass-through."""
    from bentoml._internal.server.http import traffic

    spec = importlib.util.spec_from_file_location("bentoml_traffic_unpatched", traffic.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TimeoutMiddleware  # type: ignore[no-any-return]


class _Span:
    pass


async def _answered_requests_still_held(middleware_cls: type) -> tuple[int, int]:
    """(timers still scheduled, request contexts still alive) after REQUESTS answered requests."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    async def send(message: Any) -> None:
        return None

    middleware = middleware_cls(app, timeout=60)
    spans: list[weakref.ref[_Span]] = []

    async def request() -> None:
        span = _Span()
        spans.append(weakref.ref(span))
        SPAN.set(span)
        await middleware({"type": "http", "path": "/predict"}, None, send)

    for _ in range(REQUESTS):
        await asyncio.create_task(request())  # each request in its own task and context, as uvicorn runs them
    gc.collect()
    loop = asyncio.get_running_loop()
    return len(loop._scheduled), sum(ref() is not None for ref in spans)  # type: ignore[attr-defined]


def test_bentoml_timer_keeps_every_answered_request_alive_and_the_pass_through_does_not() -> None:
    timers, alive = asyncio.run(_answered_requests_still_held(_bentoml_timeout_middleware()))
    assert (timers, alive) == (REQUESTS, REQUESTS), "BentoML cancels its timer now: re-measure, drop the patch"
    timers, alive = asyncio.run(_answered_requests_still_held(PassThroughTimeout))
    assert timers == 0 and alive <= 1  # at most the last request's span, still bound in this frame
