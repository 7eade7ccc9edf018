"""The Open Inference Protocol v2 (KServe's and Triton's REST protocol) for the served classifier.

Routes: `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `GET /v2/models/{name}[/versions/{version}]`,
`.../ready` and `POST .../infer`. The model takes one input, `text` (BYTES, shape [n] or [n, 1]), and answers:
- `label` BYTES [n]: the best class;
- `probabilities` FP32 [n, classes]: softmax (sigmoid per label for a multi-label model), classes in the order
  of the metadata's `parameters.labels`;
- `labels` BYTES [n] (multi-label models only): each text's label set as a JSON array, best first;
- `truncated` BOOL [n]: whether the text was cut at max_seq_len tokens;
- `abstained` BOOL [n] (only where a selective threshold is in force: the deploy's, listed in the metadata, or the
  request's own `parameters.min_confidence`): whether the best class's probability fell under it.
Triton's extensions: `classification` (`{"name": "probabilities", "parameters": {"classification": k}}` gives
BYTES [n, k] of "score:index:label", best first) and `binary_tensor_data` (binary inputs, and binary outputs
when asked, with the `Inference-Header-Content-Length` header). Errors are `{"error": "..."}`; a bad request is
400, an unknown model 404, the rest keep the native route's statuses (413, 401, 503, 504).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from textclf.errors import RequestError
from textclf.inference.predictions import Prediction
from textclf.inference.text_options import OVERLENGTH_POLICIES, TRUNCATION_DIRECTIONS, TextOptions
from textclf.serving.limits import Limits
from textclf.serving.protocols.common import (
    AnswerOptions,
    Body,
    Call,
    ModelFacts,
    check_min_confidence,
    parse_json,
    refuse_explain,
    retry_after,
)
from textclf.serving.validation import check_choice, check_fields, check_texts
from textclf.serving.wire import Reply

PREFIX = "/v2"
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
INPUT_NAME = "text"
OUTPUTS = ("label", "probabilities", "labels", "truncated", "abstained")
FIELDS = ("id", "inputs", "outputs", "parameters")
HEADER_LENGTH = b"inference-header-content-length"
EXTENSIONS = ["classification", "binary_tensor_data"]
# /v2/models/{name}[/versions/{version}][/ready|/infer]
MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/ready|/infer)?$")
# v2 names 400 for a request it cannot take; a wrong method, the size limits, keys and overload keep their statuses.
_BAD_REQUEST_STATUSES = (400, 422)


def _invalid(message: str) -> RequestError:
    return RequestError("invalid_request", message)


@dataclass(frozen=True)
class ModelRoute:
    name: str
    version: str | None
    action: str  # "", "/ready" or "/infer"


def match_model_route(path: str) -> ModelRoute | None:
    found = MODEL_ROUTE.match(path)
    if found is None:
        return None
    return ModelRoute(found["name"], found["version"], found["action"] or "")


def check_model(route: ModelRoute, model: ModelFacts) -> None:
    """The route names the served model (and its version, where it names one), else a 404."""
    if route.name != model.name:
        raise RequestError("not_found", f"unknown model {route.name!r}; this server serves {model.name!r}")
    if route.version is not None and route.version != model.version:
        raise RequestError(
            "not_found", f"model {model.name!r} has no version {route.version!r}; it serves {model.version!r}"
        )


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "textclf", "version": version, "extensions": EXTENSIONS}


def model_metadata(model: ModelFacts, platform: str) -> dict[str, Any]:
    classes = len(model.labels)
    outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
    ]
    if model.multi_label:
        outputs.insert(2, {"name": "labels", "datatype": "BYTES", "shape": [-1]})
    if model.min_confidence is not None:  # a request's own parameters.min_confidence adds it too
        outputs.append({"name": "abstained", "datatype": "BOOL", "shape": [-1]})
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": outputs,
        "parameters": {
            "variant": model.variant,
            "sha256": model.sha256,
            "labels": model.labels,
            "multi_label": model.multi_label,
            "threshold": model.threshold,
            "max_seq_len": model.max_seq_len,
            "temperature": model.temperature,
            "min_confidence": model.min_confidence,
        },
    }


@dataclass(frozen=True)
class Requested:
    """One output a request asks for."""

    name: str
    classification: int | None  # probabilities as Triton's classification extension: the k best
    binary: bool  # in the binary tensor extension's bytes after the JSON header


@dataclass(frozen=True)
class V2Wire:
    """What the renderer needs of a request: its id (echoed) and the outputs it asks for."""

    request_id: str | None
    outputs: list[Requested]


@dataclass(frozen=True)
class V2Adapter:
    """`POST /v2/models/{name}/infer`."""

    limits: Limits

    @property
    def name(self) -> str:
        return "v2"

    def parse(self, body: Body, model: ModelFacts) -> Call[V2Wire]:
        """The call of an infer request (JSON, or Triton's binary extension), or a RequestError naming the field."""
        header, binary = _split(body.raw, body.header_length)
        decoded = parse_json(header)
        if isinstance(decoded, dict):
            refuse_explain(decoded)
            if isinstance(decoded.get("parameters"), dict):
                refuse_explain(decoded["parameters"], "parameters.")
        payload = check_fields(decoded, "inputs", FIELDS, '{"inputs": [{"name": "text", ...}]}')
        kinds = (("id", str, "a string"), ("parameters", dict, "an object"), ("outputs", list, "a list"))
        for name, kind, what in kinds:
            if name in payload and not isinstance(payload[name], kind):  # present means a value: null is refused too
                raise _invalid(f"{name!r} must be {what}")
        request_id = payload.get("id")
        parameters = payload.get("parameters", {})
        binary_output = parameters.get("binary_data_output", False)
        if not isinstance(binary_output, bool):
            raise _invalid("'parameters.binary_data_output' must be true or false")
        texts = _texts(payload.get("inputs"), binary)
        check_texts(texts, self.limits, "inputs[0].data")
        min_confidence = check_min_confidence(
            parameters.get("min_confidence"),
            "parameters.min_confidence",
            multi_label=model.multi_label,
            nullable="min_confidence" not in parameters,  # present means a value: null is refused
        )
        abstaining = min_confidence is not None or model.min_confidence is not None
        outputs = _requested(payload.get("outputs"), model, binary_output, abstaining)
        check_choice(parameters, "on_overlength", OVERLENGTH_POLICIES, nullable=False)
        check_choice(parameters, "truncation_direction", TRUNCATION_DIRECTIONS, nullable=False)
        options = TextOptions(parameters.get("on_overlength"), parameters.get("truncation_direction", "right"))
        return Call(texts, V2Wire(request_id, outputs), options, AnswerOptions(min_confidence=min_confidence))

    def render(self, call: Call[V2Wire], predictions: list[Prediction], model: ModelFacts) -> Reply:
        """The requested output tensors, JSON or (where asked) binary after the JSON header."""
        return _answer(model, call.wire, predictions)

    def error(self, exc: RequestError) -> Reply:
        """`{"error": ...}`; a request the protocol cannot take is its 400, the rest keep their statuses."""
        status = 400 if exc.status in _BAD_REQUEST_STATUSES else exc.status
        return Reply.json(status, {"error": str(exc)}, retry_after(status))


def _split(body: bytes, header_length: bytes | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of a request (the tail is empty without the binary extension)."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise _invalid("Inference-Header-Content-Length must be the JSON header's byte count")
    cut = int(header_length)
    return body[:cut], body[cut:]


def _texts(inputs: Any, binary: bytes) -> list[str]:
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _invalid(f"'inputs' must hold exactly one tensor, {INPUT_NAME!r} (BYTES)")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise _invalid(f"unknown input {tensor.get('name')!r}; the model's input: {INPUT_NAME!r}")
    if tensor.get("datatype") != "BYTES":
        raise _invalid(f"input {INPUT_NAME!r} must be BYTES, not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or any(d != 1 for d in shape[1:])
        or shape[0] < 0
    ):
        raise _invalid(f"input {INPUT_NAME!r} must have shape [n] or [n, 1], not {shape!r}")
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _invalid(f"input {INPUT_NAME!r}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise _invalid("binary_data_size does not match the binary data after the header")
        texts = _decode_bytes(binary)
    else:
        texts = _flatten(tensor.get("data"))
    if len(texts) != shape[0]:
        raise _invalid(f"input {INPUT_NAME!r} has {len(texts)} elements, its shape {shape[0]}")
    return texts


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise _invalid(f"input {INPUT_NAME!r} needs 'data' (a list of strings)")
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _decode_bytes(raw: bytes) -> list[str]:
    """Triton's binary BYTES tensor: each element a 4-byte little-endian length, then that many bytes (UTF-8)."""
    texts, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise _invalid("binary BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > len(raw):
            raise _invalid("binary BYTES data ends inside an element")
        try:
            texts.append(raw[at : at + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise _invalid(f"binary element {len(texts)} is not UTF-8 text") from None
        at += length
    return texts


def _requested(outputs: Any, model: ModelFacts, binary_default: bool, abstaining: bool) -> list[Requested]:
    """The outputs a request asks for (absent: every one this call has), each checked against what it may ask."""
    has = {"labels": model.multi_label, "abstained": abstaining}  # outputs only some models or calls have
    available = [name for name in OUTPUTS if has.get(name, True)]
    if outputs is None:
        return [Requested(name, None, binary_default) for name in available]
    if not isinstance(outputs, list) or not outputs:
        raise _invalid("'outputs' must be a non-empty list of {name, parameters}")
    chosen = []
    for index, output in enumerate(outputs):
        name = output.get("name") if isinstance(output, dict) else None
        if name == "abstained" and not abstaining:
            raise _invalid(f"outputs[{index}]: 'abstained' needs a threshold: send parameters.min_confidence")
        if name not in available:
            raise _invalid(f"outputs[{index}]: unknown output {name!r}; the outputs: {available}")
        parameters = output.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _invalid(f"outputs[{index}].parameters must be an object")
        k = parameters.get("classification")
        if "classification" in parameters:
            if name != "probabilities":
                raise _invalid(f"outputs[{index}]: only 'probabilities' takes classification")
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise _invalid(f"outputs[{index}]: classification must be an integer ≥ 1")
            k = min(k, len(model.labels))
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise _invalid(f"outputs[{index}].parameters.binary_data must be true or false")
        chosen.append(Requested(name, k, binary))
    return chosen


def _answer(model: ModelFacts, wire: V2Wire, predictions: list[Prediction]) -> Reply:
    """The output tensors from the predictions (the model's probabilities, every class in label order)."""
    n = len(predictions)
    tensors: dict[str, tuple[str, list[int], list[Any]]] = {}
    for wanted in wire.outputs:
        if wanted.name == "label":
            tensors["label"] = ("BYTES", [n], [p.label for p in predictions])
        elif wanted.name == "probabilities" and wanted.classification is None:
            values = [v for p in predictions for v in p.scores.values()]
            tensors["probabilities"] = ("FP32", [n, len(model.labels)], values)
        elif wanted.name == "probabilities":
            k = wanted.classification or 1
            cells: list[str] = []
            for p in predictions:
                row = list(p.scores.values())
                ranked = sorted(range(len(row)), key=lambda i: -row[i])[:k]  # stable: ties keep label order
                cells.extend(f"{row[i]}:{i}:{model.labels[i]}" for i in ranked)
            tensors["probabilities"] = ("BYTES", [n, k], cells)
        elif wanted.name == "labels":
            tensors["labels"] = ("BYTES", [n], [json.dumps(p.labels or []) for p in predictions])
        elif wanted.name == "abstained":
            tensors["abstained"] = ("BOOL", [n], [bool(p.abstained) for p in predictions])
        else:
            tensors["truncated"] = ("BOOL", [n], [p.truncated for p in predictions])
    head: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if wire.request_id is not None:
        head["id"] = wire.request_id
    described, blobs = [], []
    for wanted in wire.outputs:
        datatype, shape, data = tensors[wanted.name]
        if wanted.binary:
            blob = _encode_binary(datatype, data)
            tensor: dict[str, Any] = {"parameters": {"binary_data_size": len(blob)}}
            blobs.append(blob)
        else:
            tensor = {"data": data}
        described.append({"name": wanted.name, "datatype": datatype, "shape": shape, **tensor})
    head["outputs"] = described
    header = json.dumps(head).encode()
    if not blobs:
        return Reply(200, header)
    length = (HEADER_LENGTH, str(len(header)).encode())
    return Reply(200, header + b"".join(blobs), "application/octet-stream", [length])


def _encode_binary(datatype: str, data: list[Any]) -> bytes:
    if datatype == "FP32":
        return np.asarray(data, dtype="<f4").tobytes()
    if datatype == "BOOL":
        return np.asarray(data, dtype=np.bool_).tobytes()
    parts = []
    for item in data:
        raw = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)
