"""The OpenAPI document clients are generated from: BentoML's, completed with what the guard adds.

BentoML generates the request and response schemas from the service's typed, constrained signature (its limits
from the one `Limits`). The guard answers some requests itself (errors, `GET /model`, keys, the other protocols),
so its statuses, the error body's schema, those routes and the bearer scheme are added here, from the same tables
the guard uses.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from textclf.errors import ERROR_STATUS
from textclf.serving.auth import needs_key
from textclf.serving.limits import Limits
from textclf.serving.monitoring import MONITOR_SCHEMA
from textclf.serving.protocols.docs import HF_ERROR, hf_schemas, protocol_paths
from textclf.serving.wire import ASGIApp, Receive, Reply, Scope, collect

ERROR_SCHEMA = "Error"
_OURS = ("/predict", "/model", "/monitor", "/")  # routes the guard serves itself (besides /v2/...)
_DESCRIPTIONS = {
    400: "the body is not JSON, or does not match the request schema",
    401: "missing or wrong API key (`Authorization: Bearer <key>`)",
    404: "no such model on this server",
    405: "wrong method; the `Allow` header names the right one",
    408: "the body did not arrive within the server's timeout",
    413: "too many texts, a text or the body too large",
    429: "overloaded (TEI-shaped requests: TEI's status for it; native ones get 503)",
    422: "a field is missing, unknown, of the wrong type, or a text is empty",
    500: "the server failed to answer",
    503: "overloaded, or this worker's engine stopped and it is restarting: retry after the `Retry-After` delay",
    504: "the prediction took longer than the server's timeout",
}
_MODEL_INFO = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "variant": {"type": "string"},
        "sha256": {"type": "string"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "multi_label": {"type": "boolean", "description": "sigmoid per label; predictions carry `labels`"},
        "threshold": {"type": "number", "nullable": True, "description": "multi-label: a label's probability cut-off"},
        "max_seq_len": {"type": "integer"},
        "temperature": {
            "oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}],
            "nullable": True,
            "description": "the served variant's fitted temperature (multi-label: one per label); null: raw scores",
        },
        "label_thresholds": {
            "type": "array",
            "items": {"type": "number"},
            "nullable": True,
            "description": "multi-label: per-label thresholds fitted at export; null: the one `threshold`",
        },
        "selective_threshold": {
            "type": "object",
            "nullable": True,
            "description": "the threshold in force (serve.min_confidence / serve.target_accuracy): answers under "
            "`min_confidence` are `abstained`; null: none unless a request sends its own",
            "properties": {
                "min_confidence": {"type": "number"},
                "source": {"type": "string", "enum": ["min_confidence", "target_accuracy"]},
                "target_accuracy": {"type": "number"},
                "validation_coverage": {"type": "number"},
                "validation_accuracy": {"type": "number"},
            },
        },
        "engine": {"type": "string", "enum": ["onnxruntime", "openvino"], "description": "the engine that runs"},
        "engine_threads": {"type": "integer", "description": "its threads (ORT intra-op, or OpenVINO's)"},
        "engine_detail": {"type": "string", "description": "the engine, its device, threads and settings"},
        "providers": {"type": "array", "items": {"type": "string"}},
        "intra_op_threads": {"type": "integer", "description": "the threads asked for (serve.intra_op_threads)"},
        "source": {"type": "string"},
    },
    "required": ["name", "variant", "sha256", "labels", "max_seq_len"],
}


def _error_response(status: int) -> dict[str, Any]:
    types = sorted(t for t, s in ERROR_STATUS.items() if s == status)
    response: dict[str, Any] = {
        "description": f"{_DESCRIPTIONS[status]} (error_type: {', '.join(types)})",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}},
    }
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status == 405:
        response["headers"] = {"Allow": {"schema": {"type": "string"}}}
    return response


def _responses(ok: dict[str, Any], statuses: list[int], has_keys: bool) -> dict[str, Any]:
    codes = sorted({*statuses, *([401] if has_keys else [])})
    return {"200": ok, **{str(code): _error_response(code) for code in codes}}


async def completed_openapi(app: ASGIApp, scope: Scope, receive: Receive, limits: Limits, *, has_keys: bool) -> Reply:
    """BentoML's OpenAPI document (its answer to this same request), completed by `patch_openapi`.

    Raises:
        RuntimeError: BentoML did not answer 200 (the guard turns it into a 500 in the error shape).
    """
    status, document = await collect(app, scope, receive)
    if status != 200:
        raise RuntimeError(f"BentoML answered {status} for {scope.get('path')}")
    return Reply.json(200, patch_openapi(json.loads(document), limits, has_keys=has_keys))


def patch_openapi(spec: dict[str, Any], limits: Limits, *, has_keys: bool) -> dict[str, Any]:
    """A copy of BentoML's document with the guard's statuses, the error schema, `GET /model` and the keys."""
    spec = copy.deepcopy(spec)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "what went wrong, naming the field at fault"},
            "error_type": {"type": "string", "enum": sorted(ERROR_STATUS)},
        },
        "required": ["error", "error_type"],
        "additionalProperties": False,
    }
    paths = spec.setdefault("paths", {})
    predict = paths.get("/predict", {}).get("post")
    if predict is not None:
        # A body is required and the guard refuses unknown fields; the schema says both (BentoML says neither).
        if "requestBody" in predict:
            predict["requestBody"]["required"] = True
        body = predict.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        for schema in (body, schemas.get("predict__Input")):
            if isinstance(schema, dict) and schema.get("type") == "object":
                schema["additionalProperties"] = False
                _null_in_nullable_enums(schema)
        ok = predict.get("responses", {}).get("200", {"description": "one prediction per text, in order"})
        predict["responses"] = _responses(ok, [400, 405, 408, 413, 422, 429, 500, 503, 504], has_keys)
        _accept_tei(predict)
        predict["description"] = (
            f"Classify 1 to {limits.max_texts_per_request} texts (each at most {limits.max_chars_per_text} "
            f"characters, the body at most {limits.max_body_bytes} bytes). Concurrent requests are batched. "
            "A body with `inputs` instead of `texts` is text-embeddings-inference's request and is answered in its "
            "shape (429 is its overload status; its errors carry TEI's error types)."
        )
    schemas.update(hf_schemas(limits))
    paths.update(protocol_paths(has_keys))
    paths["/model"] = {
        "get": {
            "summary": "The served model: name, variant, sha256, labels, max_seq_len",
            "operationId": "model",
            "responses": _responses(
                {"description": "the served model", "content": {"application/json": {"schema": _MODEL_INFO}}},
                [405, 500],
                has_keys,
            ),
        }
    }
    paths["/monitor"] = _monitor_path(has_keys)
    if has_keys:
        components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
        # The guard's own rule says which operations need the key (probes, the page and the docs stay open);
        # BentoML's other routes keep their documentation as they were (/metrics is open by default).
        for route, item in paths.items():
            for method, operation in item.items():
                ours = route in _OURS or route.startswith("/v2")
                if ours and needs_key(route, method.upper(), metrics_public=True):
                    operation["security"] = [{"bearer": []}]
    return spec


def _monitor_path(has_keys: bool) -> dict[str, Any]:
    """`GET /monitor`: the answering worker's drift report, or 404 where the run has no drift reference."""
    ok = {"description": "the report", "content": {"application/json": {"schema": MONITOR_SCHEMA}}}
    responses = _responses(ok, [404, 405, 500, 503], has_keys)
    responses["404"]["description"] = "drift is off: the model was exported without a drift reference (not_found)"
    summary = "Drift of this worker's last serve.monitor_window answered texts against export's reference"
    return {"get": {"summary": summary, "operationId": "monitor", "responses": responses}}


def _null_in_nullable_enums(schema: Any) -> None:
    """OpenAPI 3.0 reads `enum` before `nullable`: a nullable enum must list null itself (BentoML leaves it out)."""
    if isinstance(schema, dict):
        if schema.get("nullable") and isinstance(schema.get("enum"), list) and None not in schema["enum"]:
            schema["enum"].append(None)
        for value in schema.values():
            _null_in_nullable_enums(value)
    elif isinstance(schema, list):
        for value in schema:
            _null_in_nullable_enums(value)


def _accept_tei(predict: dict[str, Any]) -> None:
    """`/predict` also takes TEI's `{"inputs": ...}`: either body, and either answer or error shape, documented."""
    content = predict.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None and "schema" in content:
        content["schema"] = {"anyOf": [content["schema"], {"$ref": "#/components/schemas/TeiRequest"}]}
    tei_answers = {"200": ["HfRanked", "HfBatch"]}
    for status, response in predict["responses"].items():
        answer = response.get("content", {}).get("application/json")
        if answer is not None and "schema" in answer:
            others = [{"$ref": f"#/components/schemas/{name}"} for name in tei_answers.get(status, [HF_ERROR])]
            answer["schema"] = {"anyOf": [answer["schema"], *others]}
