"""The OpenAPI description of the other protocols' routes: request and answer schemas, and their error shapes.

Written from the same constants the adapters use (fields, functions, outputs), so the document and the routes
say the same thing. `textclf.serving.openapi` adds these to BentoML's document.
"""

from __future__ import annotations

from typing import Any

from textclf.inference.text_options import OVERLENGTH_POLICIES
from textclf.serving.limits import NON_BLANK_PATTERN, Limits
from textclf.serving.protocols import hf, v2

HF_ERROR = "HfError"
V2_ERROR = "V2Error"
TEI_ERROR_TYPES = ["Backend", "Empty", "Overloaded", "Unauthorized", "Unhealthy", "Validation"]
_HF_STATUSES = {
    400: "not JSON, or an empty text (error_type Empty)",
    405: "wrong method",
    408: "the body did not arrive in time",
    413: "too many texts, a text or the body too large",
    422: "a field is missing, unknown or of the wrong type; a text pair; a text over max_seq_len with truncate false",
    429: "overloaded: retry after the Retry-After delay",
    500: "the server failed to answer",
    503: "this worker's engine stopped and it is restarting",
    504: "the prediction took longer than the server's timeout",
}
_V2_STATUSES = {
    400: "a malformed request: not JSON, a wrong input name, datatype or shape (the schema cannot say that "
    "shape[0] must equal the number of texts), an unknown output",
    404: "no such model or version on this server",
    405: "wrong method",
    408: "the body did not arrive in time",
    413: "too many texts, a text or the body too large",
    500: "the server failed to answer",
    503: "overloaded, or this worker's engine stopped: retry after the Retry-After delay",
    504: "the prediction took longer than the server's timeout",
}
_NO_BODY = {"description": "true (the protocol answers health with the status alone; the body is empty)"}
_MIN_CONFIDENCE = {
    "type": "number",
    "minimum": 0,
    "maximum": 1,
    "description": "this request's selective threshold (absent: the server's); single-label models only",
}


def _error(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _errors(schema: str, statuses: dict[int, str], codes: list[int], has_keys: bool) -> dict[str, Any]:
    chosen = sorted({*codes, *([401] if has_keys else [])})
    described = {**statuses, 401: "missing or wrong API key (`Authorization: Bearer <key>`)"}
    return {str(code): _error(schema, described[code]) for code in chosen}


def _text(limits: Limits) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": limits.max_chars_per_text, "pattern": NON_BLANK_PATTERN}


def _hf_request(limits: Limits, inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "inputs": inputs,
            "parameters": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "top_k": {"type": "integer", "minimum": 1, "nullable": True},
                    # OpenAPI 3.0: a nullable enum lists null among its values.
                    "function_to_apply": {"type": "string", "enum": [*hf.FUNCTIONS, None], "nullable": True},
                    # Accepted and checked; the Hugging Face answer has no field to say which texts abstained.
                    "min_confidence": {**_MIN_CONFIDENCE, "nullable": True},
                },
                "additionalProperties": False,
            },
            "truncate": {
                "type": "boolean",
                "nullable": True,
                "description": "false: a text over max_seq_len tokens is a 422; absent: the server's on_overlength",
            },
            "truncation_direction": {"type": "string", "enum": ["right", "left", "Right", "Left"]},
            "raw_scores": {"type": "boolean", "description": "logits instead of probabilities"},
        },
        "required": ["inputs"],
        "additionalProperties": False,
    }


def hf_schemas(limits: Limits) -> dict[str, Any]:
    """Components for the Hugging Face / TEI routes."""
    text = _text(limits)
    batch = {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_texts_per_request}
    tei_item = {"type": "array", "items": text, "minItems": 1, "maxItems": 1, "description": "one text"}
    tei_batch = {**batch, "items": tei_item, "description": "a batch: one single-text list per text"}
    scored = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
        "required": ["label", "score"],
        "additionalProperties": False,
    }
    ranked = {"type": "array", "items": {"$ref": "#/components/schemas/HfScore"}, "description": "best first"}
    return {
        "HfRequest": _hf_request(limits, {"oneOf": [text, batch], "description": "a text, or a batch of texts"}),
        "TeiRequest": _hf_request(
            limits, {"oneOf": [text, {**tei_item, "description": "one text"}, tei_batch], "description": hf.__doc__}
        ),
        "HfScore": scored,
        "HfRanked": ranked,
        "HfBatch": {"type": "array", "items": {"$ref": "#/components/schemas/HfRanked"}, "description": "per text"},
        HF_ERROR: {
            "type": "object",
            "properties": {"error": {"type": "string"}, "error_type": {"type": "string", "enum": TEI_ERROR_TYPES}},
            "required": ["error", "error_type"],
            "additionalProperties": False,
        },
        V2_ERROR: {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
            "additionalProperties": False,
        },
        "V2InferRequest": _v2_request(limits),
    }


def _v2_request(limits: Limits) -> dict[str, Any]:
    tensor = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": [v2.INPUT_NAME]},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": limits.max_texts_per_request},
                "minItems": 1,
                "maxItems": 2,
                "description": "[n] or [n, 1]; n is the number of texts in data",
            },
            "datatype": {"type": "string", "enum": ["BYTES"]},
            "data": {"type": "array", "items": _text(limits), "minItems": 1, "maxItems": limits.max_texts_per_request},
            "parameters": {"type": "object"},
        },
        # `data` is required of a JSON body; Triton's binary extension (a JSON header, then the bytes, its length
        # in Inference-Header-Content-Length) replaces it with parameters.binary_data_size.
        "required": ["name", "shape", "datatype", "data"],
    }
    output = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": list(v2.OUTPUTS)},
            "parameters": {
                "type": "object",
                "properties": {
                    "classification": {"type": "integer", "minimum": 1, "description": "probabilities only"},
                    "binary_data": {"type": "boolean"},
                },
            },
        },
        "required": ["name"],
    }
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
            "outputs": {"type": "array", "items": output, "minItems": 1},
            "parameters": {
                "type": "object",
                "properties": {
                    "binary_data_output": {"type": "boolean"},
                    "on_overlength": {"type": "string", "enum": list(OVERLENGTH_POLICIES)},
                    "truncation_direction": {"type": "string", "enum": ["right", "left"]},
                    "min_confidence": {**_MIN_CONFIDENCE, "description": "adds the BOOL output `abstained`"},
                },
            },
        },
        "required": ["inputs"],
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def protocol_paths(has_keys: bool) -> dict[str, Any]:
    """Paths of the Hugging Face route (`POST /`) and the v2 protocol."""
    hf_codes = [400, 405, 408, 413, 422, 429, 500, 503, 504]
    v2_codes = [400, 404, 405, 408, 413, 500, 503, 504]
    name = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}
    tensor_out = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
        "required": ["name", "datatype", "shape"],
    }
    infer_ok = {
        "description": "the outputs (JSON; with binary outputs asked for, the JSON header then the tensors' bytes, "
        "its length in Inference-Header-Content-Length)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": tensor_out},
                    },
                    "required": ["model_name", "outputs"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    metadata = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": tensor_out},
            "outputs": {"type": "array", "items": tensor_out},
            "parameters": {"type": "object"},
        },
        "required": ["name", "platform", "inputs", "outputs"],
    }

    def operation(summary: str, ok: dict[str, Any], codes: list[int], schema: str, **extra: Any) -> dict[str, Any]:
        statuses = _HF_STATUSES if schema == HF_ERROR else _V2_STATUSES
        responses = {"200": ok, **_errors(schema, statuses, codes, has_keys)}
        return {"summary": summary, "responses": responses, **extra}

    def infer(params: list[dict[str, Any]], op: str) -> dict[str, Any]:
        body = {"required": True, "content": {"application/json": {"schema": _ref("V2InferRequest")}}}
        summary = "Open Inference Protocol v2: classify the BYTES input `text`"
        return {
            "post": operation(
                summary, infer_ok, v2_codes, V2_ERROR, parameters=params, requestBody=body, operationId=op
            )
        }

    def model_get(params: list[dict[str, Any]], op: str) -> dict[str, Any]:
        ok = _json(metadata, "the model's inputs, outputs, versions and platform")
        return {"get": operation("v2 model metadata", ok, [404, 405, 500], V2_ERROR, parameters=params, operationId=op)}

    def ready(params: list[dict[str, Any]], op: str) -> dict[str, Any]:
        return {
            "get": operation(
                "v2 model readiness", _NO_BODY, [400, 404, 405], V2_ERROR, parameters=params, operationId=op
            )
        }

    hub_body = {"required": True, "content": {"application/json": {"schema": _ref("HfRequest")}}}
    page = {"description": "the try-it page", "content": {"text/html": {"schema": {"type": "string"}}}}
    paths: dict[str, Any] = {
        "/": {
            "get": {"summary": "The try-it page", "operationId": "page", "security": [], "responses": {"200": page}},
            "post": operation(
                "Hugging Face text-classification task (what InferenceClient(base_url).text_classification posts)",
                _json(_ref("HfBatch"), "one list of {label, score} per text, best first"),
                hf_codes,
                HF_ERROR,
                requestBody=hub_body,
                operationId="hf_text_classification",
            ),
        },
        "/v2": {
            "get": operation(
                "v2 server metadata",
                _json(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "version": {"type": "string"},
                            "extensions": {"type": "array", "items": {"type": "string"}},
                        },
                        "required": ["name", "version", "extensions"],
                    },
                    "the server's name, version and protocol extensions",
                ),
                [405],
                V2_ERROR,
                operationId="v2_server_metadata",
            )
        },
        "/v2/health/live": {
            "get": {
                "summary": "v2 liveness",
                "operationId": "v2_live",
                "security": [],
                "responses": {"200": _NO_BODY, "405": _error(V2_ERROR, "wrong method")},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "v2 readiness",
                "operationId": "v2_ready",
                "security": [],
                "responses": {
                    "200": _NO_BODY,
                    "400": {"description": "not ready (empty body)"},
                    "405": _error(V2_ERROR, "wrong method"),
                },
            }
        },
        "/v2/models/{model_name}": model_get([name], "v2_model_metadata"),
        "/v2/models/{model_name}/versions/{model_version}": model_get([name, version], "v2_model_version_metadata"),
        "/v2/models/{model_name}/ready": ready([name], "v2_model_ready"),
        "/v2/models/{model_name}/versions/{model_version}/ready": ready([name, version], "v2_model_version_ready"),
        "/v2/models/{model_name}/infer": infer([name], "v2_infer"),
        "/v2/models/{model_name}/versions/{model_version}/infer": infer([name, version], "v2_version_infer"),
    }
    return paths
