"""One measured workaround in BentoML 1.4: its request timer outlives every request.

BentoML's `TimeoutMiddleware` (bentoml/_internal/server/http/traffic.py, 1.4.30 to 1.4.40: the file is the same
in all of them) calls `loop.call_later(timeout, ...)` for every request and never cancels the timer, so each
request's timer, with the context it captured (the request's tracing span and all it references), stays alive for
the whole timeout (60 s). At ~550 requests/s that is ~33,000 live request contexts: every full garbage collection
walks them and stops the event loop and the engine thread for 100-250 ms, every few seconds (measured with
`textclf_gc_pause_seconds`; p99 at 32 users 300 ms instead of ~115 ms, issue 10). The guard enforces
`serve.timeout_s` itself, with a timer it cancels, and answers in the project's error shape; BentoML's middleware
becomes a pass-through.

The swap replaces a private name, so a release that imports it differently would make it a silent no-op. What
counts is the effect: `PassThroughTimeout` counts the stacks it is built into (Starlette builds a stack before the
app's startup, hence before the service's `__init__`), and `check_request_timer_replaced` logs an error when a
served app was built without it. tests/integration/test_bentoml_patch.py checks the real stack of the service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class PassThroughTimeout:
    """Takes BentoML's place in its middleware stack; the request timeout lives in `textclf.serving.guard`."""

    built: ClassVar[int] = 0  # middleware stacks this process built with the pass-through in them

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout  # kept for introspection only
        PassThroughTimeout.built += 1

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def replace_bentoml_request_timer() -> bool:
    """Swap BentoML's TimeoutMiddleware for the pass-through; False (and a warning) if its module moved.

    True only means the name was assigned; `check_request_timer_replaced` tells whether it took effect.
    """
    try:
        from bentoml._internal.server.http import traffic
    except ImportError:
        logger.warning("bentoml's traffic module moved: its per-request timer is left as it is")
        return False
    traffic.TimeoutMiddleware = PassThroughTimeout  # type: ignore[misc,assignment]
    return True


def check_request_timer_replaced() -> bool:
    """True if a middleware stack with the pass-through was built in this process; else log an error.

    Call it once the ASGI app has started (the service's `__init__` runs in its startup).
    """
    if PassThroughTimeout.built:
        return True
    try:
        from bentoml import __version__ as version
    except ImportError:  # pragma: no cover - bentoml is what serves us
        version = "?"
    logger.error(
        "BentoML %s built its app without textclf's PassThroughTimeout: its per-request timer is back (every "
        "request's context lives for the whole timeout; long GC pauses under load). See "
        "textclf/serving/bentoml_patch.py.",
        version,
    )
    return False
