"""The one route table: which path and method go to which protocol's adapter, and what answers everything else.

A request resolves to one target: `Classify` (read the body under the guard's limits and deadline, parse it with
an adapter, run the pipeline, render), `Respond` (an answer known without a body: the page, `GET /model`,
`GET /monitor`, v2 metadata and health, a refused method), `OpenApi` (BentoML's document, completed) or `Forward`
(BentoML's own routes: probes, metrics, Swagger UI's assets, the schema). Each path's other methods are a 405 in
that route's error shape, naming the methods it takes; where BentoML serves the path too, they pass to BentoML
instead.

`POST /predict` is both textclf's route and text-embeddings-inference's (TEI's clients post `{"inputs": ...}`
there): its target decodes the body once and gives it to the TEI adapter when it has `inputs` and no `texts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textclf import __version__
from textclf.errors import RequestError
from textclf.serving.limits import Limits
from textclf.serving.monitoring import DRIFT_OFF
from textclf.serving.pages import page
from textclf.serving.protocols import v2
from textclf.serving.protocols.common import Adapter, Body
from textclf.serving.protocols.hf import HfAdapter, is_tei_request
from textclf.serving.protocols.native import NativeAdapter
from textclf.serving.state import ModelState
from textclf.serving.wire import Reply

PREDICT_PATH = "/predict"
ROOT_PATH = "/"  # GET: the try-it page; POST: the Hugging Face task API (InferenceClient(base_url) posts here)
MODEL_PATH = "/model"
MONITOR_PATH = "/monitor"  # GET: the drift report of the worker that answers (textclf.serving.monitoring)
OPENAPI_PATH = "/docs.json"
DOCS_PATH = "/docs"  # BentoML's Swagger UI, which BentoML serves at "/", where the try-it page lives here
ANY = "*"  # a table entry for every method its path does not list


@dataclass(frozen=True)
class Classify:
    """Classify the request's texts with `adapter` (with `tei` instead where the body is TEI's)."""

    adapter: Adapter[Any]
    tei: Adapter[Any] | None = None

    def choose(self, body: Body) -> Adapter[Any]:
        """The adapter that reads this body (decoding it, once, when the route speaks two shapes)."""
        if self.tei is not None and is_tei_request(body.json()):
            return self.tei
        return self.adapter


@dataclass(frozen=True)
class Respond:
    """A finished answer."""

    reply: Reply


@dataclass(frozen=True)
class OpenApi:
    """BentoML's OpenAPI document, completed with the guard's routes, statuses and error shapes."""


@dataclass(frozen=True)
class Forward:
    """BentoML's app answers, under `path` where set (the request's own path otherwise)."""

    path: str | None = None


Target = Classify | Respond | OpenApi | Forward
Handler = Callable[[str], Target]  # the request's path → what answers it
FORWARD = Forward()


def _always(target: Target) -> Handler:
    return lambda _path: target


class RouteTable:
    """Every route the guard answers, for one worker's model state."""

    def __init__(self, limits: Limits, state: ModelState) -> None:
        self.state = state
        self.native = NativeAdapter(limits)
        self.hub = HfAdapter("hub", limits)
        self.tei = HfAdapter("tei", limits)
        self.v2 = V2Routes(v2.V2Adapter(limits), state)
        page_route: dict[str, Handler] = {"GET": self._page, "HEAD": self._page}  # others: BentoML's 404 / 405
        self.paths: dict[str, dict[str, Handler]] = {
            ROOT_PATH: {
                **page_route,
                "POST": _always(Classify(self.hub)),
                ANY: self._refuse("GET / is the try-it page, POST / the Hugging Face task API", "GET, HEAD, POST"),
            },
            "/ui/app.js": page_route,
            "/ui/style.css": page_route,
            DOCS_PATH: {"GET": _always(Forward("/")), "HEAD": _always(Forward("/"))},
            OPENAPI_PATH: {"GET": _always(OpenApi())},
            MODEL_PATH: {
                "GET": self._model,
                "HEAD": self._model,
                ANY: self._refuse(f"use GET {MODEL_PATH}", "GET"),
            },
            MONITOR_PATH: {
                "GET": self._monitor,
                "HEAD": self._monitor,
                ANY: self._refuse(f"use GET {MONITOR_PATH}", "GET"),
            },
            PREDICT_PATH: {
                "POST": _always(Classify(self.native, tei=self.tei)),
                ANY: self._refuse(f"use POST {PREDICT_PATH}", "POST"),
            },
        }

    def resolve(self, path: str, method: str) -> Target:
        """What answers `method path`."""
        if path == v2.PREFIX or path.startswith(v2.PREFIX + "/"):
            return self.v2.resolve(path, method)
        methods = self.paths.get(path)
        if methods is None:
            return FORWARD
        handler = methods.get(method) or methods.get(ANY)
        return handler(path) if handler is not None else FORWARD

    def shape(self, path: str) -> Adapter[Any]:
        """Whose error shape answers a request to `path` before its route is known (a refused key): each
        protocol's clients read their own."""
        if path.startswith(v2.PREFIX):
            return self.v2.adapter
        return self.hub if path == ROOT_PATH else self.native

    def _refuse(self, message: str, allow: str) -> Handler:
        refused = self.native.error(RequestError("method_not_allowed", message))
        return _always(Respond(refused.with_headers([(b"allow", allow.encode())])))

    @staticmethod
    def _page(path: str) -> Target:
        found = page(path)
        if found is None:  # pragma: no cover - the table lists only pages that exist
            return FORWARD
        body, content_type = found
        return Respond(Reply(200, body, content_type, [(b"cache-control", b"no-cache")]))

    def _model(self, _path: str) -> Target:
        return Respond(Reply.json(200, self.state.info))

    def _monitor(self, _path: str) -> Target:
        """This worker's drift report; 404 where drift is off (a run exported without a reference), 503 while the
        worker is still starting."""
        try:
            _, pipeline = self.state.loaded()
            if pipeline.monitor is None:
                raise RequestError("not_found", DRIFT_OFF)
            return Respond(Reply.json(200, pipeline.monitor()))
        except RequestError as exc:
            return Respond(self.native.error(exc))


class V2Routes:
    """The Open Inference Protocol's routes: server and model metadata, health, and inference."""

    def __init__(self, adapter: v2.V2Adapter, state: ModelState) -> None:
        self.adapter = adapter
        self.state = state

    def resolve(self, path: str, method: str) -> Target:
        """What answers `method path` under /v2 (its errors in v2's shape)."""
        route = v2.match_model_route(path)
        try:
            if route is not None and route.action == "/infer":
                v2.check_model(route, self.state.model())  # an unknown model is a 404 whatever the method
                if method != "POST":
                    return self._refuse(f"use POST {path}", "POST")
                return Classify(self.adapter)
            if method not in ("GET", "HEAD"):
                return self._refuse(f"use GET {path}", "GET")
            if path in (v2.LIVE_PATH, v2.READY_PATH):
                return self._health(path == v2.LIVE_PATH or self.state.is_ready)
            if path == v2.PREFIX:
                return Respond(Reply.json(200, v2.server_metadata(__version__)))
            if route is None:
                raise RequestError("not_found", f"no route {path}; see GET {OPENAPI_PATH}")
            model = self.state.model()
            v2.check_model(route, model)
            if route.action == "/ready":
                return self._health(self.state.is_ready)
            return Respond(Reply.json(200, v2.model_metadata(model, self.state.platform)))
        except RequestError as exc:
            return Respond(self.adapter.error(exc))

    def _refuse(self, message: str, allow: str) -> Target:
        refused = self.adapter.error(RequestError("method_not_allowed", message))
        return Respond(refused.with_headers([(b"allow", allow.encode())]))

    @staticmethod
    def _health(healthy: bool) -> Target:
        """The protocol answers health with the status alone: 200 true, 4xx false, an empty body."""
        return Respond(Reply(200 if healthy else 400, b"", "text/plain"))
