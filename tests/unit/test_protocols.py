"""The protocol adapters alone: what each request shape means and how each answer is written.

The request side of the Open Inference Protocol is checked against tritonclient's own serializer and the answer
side against its own parser: the real client's bytes, not our reading of the spec."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from textclf.errors import RequestError
from textclf.inference.predictions import predictions, softmax
from textclf.serving.limits import Limits
from textclf.serving.protocols.common import Adapter, Body, Call, ModelFacts
from textclf.serving.protocols.hf import HfAdapter
from textclf.serving.protocols.v2 import V2Adapter, check_model, match_model_route, model_metadata
from textclf.serving.wire import Reply

LIMITS = Limits(max_texts_per_request=4, max_chars_per_text=50, max_body_bytes=10_000, max_concurrency=4)
MODEL = ModelFacts("textclf", "int8-qdq", "ab" * 32, ["neg", "pos"], None, 128)
MULTI = ModelFacts("textclf", "fp32", "cd" * 32, ["a", "b", "c"], 0.5, 128)
LOGITS = np.array([[0.5, -1.0], [-2.0, 1.5]], dtype=np.float32)


def _json(body: dict[str, object]) -> Body:
    return Body(json.dumps(body).encode())


def _answer(
    adapter: Adapter[Any], call: Call[Any], model: ModelFacts, logits: np.ndarray, truncated: list[bool]
) -> Reply:
    """What the pipeline does between parse and render: the model's scoring with the call's answer options."""
    scored = predictions(logits, truncated, model.labels, model.threshold, **call.answer.as_kwargs())
    return adapter.render(call, scored, model)


def _hf(dialect: str, body: dict[str, object], model: ModelFacts = MODEL, logits: np.ndarray = LOGITS) -> object:
    adapter = HfAdapter(dialect, LIMITS)  # type: ignore[arg-type]
    call = adapter.parse(_json(body), model)
    reply = _answer(adapter, call, model, logits[: len(call.texts)], [False] * len(call.texts))
    assert reply.status == 200
    return json.loads(reply.body)


def _refused(adapter: HfAdapter | V2Adapter, body: Body, model: ModelFacts = MODEL) -> RequestError:
    with pytest.raises(RequestError) as caught:
        adapter.parse(body, model)
    return caught.value


def test_hub_answers_one_list_per_text_best_first() -> None:
    one = _hf("hub", {"inputs": "a good film"})
    probs = softmax(LOGITS)
    assert one == [[{"label": "neg", "score": float(probs[0, 0])}, {"label": "pos", "score": float(probs[0, 1])}]]
    two = _hf("hub", {"inputs": ["a", "b"], "parameters": {"top_k": 1}})
    assert two == [[{"label": "neg", "score": float(probs[0, 0])}], [{"label": "pos", "score": float(probs[1, 1])}]]


def test_tei_reads_a_list_of_strings_as_one_text_or_a_pair_and_a_list_of_lists_as_a_batch() -> None:
    assert len(_hf("tei", {"inputs": "a good film"})) == 2  # type: ignore[arg-type]
    assert _hf("tei", {"inputs": ["a good film"]}) == _hf("tei", {"inputs": "a good film"})
    batch = _hf("tei", {"inputs": [["a"], ["b"]]})
    assert isinstance(batch, list) and len(batch) == 2 and all(isinstance(item, list) for item in batch)
    adapter = HfAdapter("tei", LIMITS)
    for pair in ({"inputs": ["a", "b"]}, {"inputs": [["a"], ["b", "c"]]}):
        assert "text pairs are not supported" in str(_refused(adapter, _json(pair)))
    assert _refused(adapter, _json({"inputs": ["a", "b", "c"]})).error_type == "invalid_request"


def test_functions_and_raw_scores() -> None:
    raw = _hf("tei", {"inputs": "x", "raw_scores": True})
    assert raw == [{"label": "neg", "score": 0.5}, {"label": "pos", "score": -1.0}]
    assert _hf("hub", {"inputs": "x", "parameters": {"function_to_apply": "none"}}) == [raw]
    sig = _hf("hub", {"inputs": "x", "parameters": {"function_to_apply": "sigmoid"}})
    assert sig[0][0]["score"] == pytest.approx(1 / (1 + np.exp(-0.5)), abs=1e-6)  # type: ignore[index]
    # A multi-label model's own function is the sigmoid per label.
    multi = _hf("hub", {"inputs": "x"}, MULTI, np.array([[2.0, -1.0, 0.0]], dtype=np.float32))
    assert [item["label"] for item in multi[0]] == ["a", "c", "b"]  # type: ignore[index]
    assert multi[0][1]["score"] == pytest.approx(0.5)  # type: ignore[index]


def test_a_function_other_than_the_models_is_applied_to_the_logits_and_cut_to_top_k() -> None:
    logits = np.array([[2.0, -1.0, 0.0]], dtype=np.float32)
    body = {"inputs": "x", "parameters": {"function_to_apply": "softmax", "top_k": 2}}
    got = _hf("hub", body, MULTI, logits)
    expected = softmax(logits)[0]
    assert got == [[{"label": "a", "score": float(expected[0])}, {"label": "c", "score": float(expected[2])}]]
    sig = _hf("tei", {"inputs": "x", "parameters": {"function_to_apply": "sigmoid", "top_k": 1}})
    assert sig == [{"label": "neg", "score": pytest.approx(1 / (1 + np.exp(-0.5)), abs=1e-6)}]


def test_native_answers_are_the_predictions_json() -> None:
    from textclf.serving.protocols.native import NativeAdapter

    adapter = NativeAdapter(LIMITS)
    call = adapter.read({"texts": ["a", "b"], "top_k": 1})
    scored = predictions(LOGITS, [True, False], MULTI.labels[:2], None, chunks=[3, 1], **call.answer.as_kwargs())
    body = json.loads(adapter.render(call, scored, MODEL).body)
    probs = softmax(LOGITS)
    assert body == [
        {
            "label": "a",
            "score": float(probs[0, 0]),
            "scores": {"a": float(probs[0, 0])},
            "truncated": True,
            "chunks": 3,
        },
        {"label": "b", "score": float(probs[1, 1]), "scores": {"b": float(probs[1, 1])}, "chunks": 1},
    ]
    refused = adapter.error(RequestError("overloaded", "busy"))
    assert refused.status == 503 and (b"retry-after", b"1") in refused.headers
    assert json.loads(refused.body) == {"error": "busy", "error_type": "overloaded"}


def test_truncation_options_reach_the_call() -> None:
    adapter = HfAdapter("tei", LIMITS)
    strict = adapter.parse(_json({"inputs": "x", "truncate": False, "truncation_direction": "Left"}), MODEL)
    assert (strict.options.on_overlength, strict.options.truncation_direction) == ("error", "left")
    assert adapter.parse(_json({"inputs": "x", "truncate": True}), MODEL).options.on_overlength == "truncate"
    assert adapter.parse(_json({"inputs": "x"}), MODEL).options.on_overlength is None  # the server's


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"texts": ["x"]}, "'inputs'"),
        ({"inputs": "x", "top_k": 1}, "'top_k'"),
        ({"inputs": "x", "parameters": {"k": 1}}, "'k'"),
        ({"inputs": "x", "parameters": {"top_k": 0}}, "top_k"),
        ({"inputs": "x", "parameters": {"function_to_apply": "relu"}}, "function_to_apply"),
        ({"inputs": "x", "truncate": "no"}, "'truncate'"),
        ({"inputs": "   "}, "inputs[0]"),
        ({"inputs": ["a"] * 5}, "limit is 4"),
    ],
)
def test_bad_hf_requests_name_the_field(body: dict[str, object], names: str) -> None:
    assert names in str(_refused(HfAdapter("hub", LIMITS), _json(body)))


def test_hf_errors_use_tei_types_and_statuses() -> None:
    adapter = HfAdapter("tei", LIMITS)
    overloaded = adapter.error(RequestError("overloaded", "busy"))
    assert overloaded.status == 429 and json.loads(overloaded.body) == {"error": "busy", "error_type": "Overloaded"}
    assert (b"retry-after", b"1") in overloaded.headers
    too_long = adapter.error(RequestError("text_too_long", "long"))
    assert too_long.status == 422 and json.loads(too_long.body)["error_type"] == "Validation"
    assert adapter.error(RequestError("empty_text", "empty")).status == 400


def _triton_body(texts: list[str], *, binary: bool, outputs: list[object] | None = None) -> Body:
    from tritonclient.http import InferInput
    from tritonclient.http._utils import _get_inference_request

    tensor = InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    body, header_length = _get_inference_request([tensor], "req-1", outputs, 0, False, False, 0, None, None)
    return Body(body, str(header_length).encode() if header_length is not None else None)


def _triton_result(reply_body: bytes, headers: list[tuple[bytes, bytes]]) -> object:
    from tritonclient.http import InferResult

    length = dict(headers).get(b"inference-header-content-length")
    return InferResult.from_response_body(reply_body, header_length=int(length) if length else None)


@pytest.mark.parametrize("binary", [False, True])
def test_v2_reads_tritonclients_request_and_tritonclient_reads_the_answer(binary: bool) -> None:
    texts = ["a good film", "a dull plot"]
    adapter = V2Adapter(LIMITS)
    call = adapter.parse(_triton_body(texts, binary=binary), MODEL)
    assert call.texts == texts
    reply = _answer(adapter, call, MODEL, LOGITS, [False, True])
    result = _triton_result(reply.body, reply.headers)
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == ["neg", "pos"]  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("probabilities"), softmax(LOGITS))  # type: ignore[attr-defined]
    assert result.as_numpy("truncated").tolist() == [False, True]  # type: ignore[attr-defined]
    assert result.get_response()["id"] == "req-1"  # type: ignore[attr-defined]


def test_v2_classification_extension_and_multi_label_sets() -> None:
    from tritonclient.http import InferRequestedOutput

    wanted = [InferRequestedOutput("probabilities", binary_data=False, class_count=2), InferRequestedOutput("labels")]
    adapter = V2Adapter(LIMITS)
    call = adapter.parse(_triton_body(["x"], binary=False, outputs=wanted), MULTI)
    reply = _answer(adapter, call, MULTI, np.array([[2.0, -1.0, 0.0]], dtype=np.float32), [False])
    result = _triton_result(reply.body, reply.headers)
    top = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("probabilities").reshape(-1)]  # type: ignore[attr-defined]
    assert [cell.split(":")[1:] for cell in top] == [["0", "a"], ["2", "c"]]
    assert json.loads(result.as_numpy("labels")[0]) == ["a", "c"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("tensor", "names"),
    [
        ({"name": "input_ids", "shape": [1], "datatype": "BYTES", "data": ["x"]}, "'text'"),
        ({"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}, "BYTES"),
        ({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["x"]}, "1 elements"),
        ({"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["x", "y"]}, "shape"),
        ({"name": "text", "shape": [1], "datatype": "BYTES", "data": [""]}, "inputs[0].data[0]"),
    ],
)
def test_bad_v2_requests_name_the_problem(tensor: dict[str, object], names: str) -> None:
    error = _refused(V2Adapter(LIMITS), _json({"inputs": [tensor]}))
    assert names in str(error)
    reply = V2Adapter(LIMITS).error(error)
    assert reply.status in (400, 413) and set(json.loads(reply.body)) == {"error"}


def test_v2_model_routes_name_the_served_model_and_version() -> None:
    route = match_model_route(f"/v2/models/textclf/versions/{MODEL.version}/infer")
    assert route is not None and route.action == "/infer"
    check_model(route, MODEL)
    for path in ("/v2/models/other", "/v2/models/textclf/versions/7"):
        found = match_model_route(path)
        assert found is not None
        with pytest.raises(RequestError) as caught:
            check_model(found, MODEL)
        assert caught.value.status == 404
    meta = model_metadata(MULTI, "openvino")
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities", "labels", "truncated"]
    assert meta["outputs"][1]["shape"] == [-1, 3] and meta["parameters"]["sha256"] == MULTI.sha256
