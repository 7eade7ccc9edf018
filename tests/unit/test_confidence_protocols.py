"""Confidence on the wire (issue 36), each protocol adapter alone: a request's `min_confidence` is checked in each
protocol's error shape, `abstained` reaches the native and v2 answers (not Hugging Face's, whose shape has no such
field), and every route scores with the served variant's temperature, `function_to_apply` included."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from textclf.errors import RequestError
from textclf.inference.predictions import predictions, sigmoid, softmax
from textclf.serving.limits import Limits
from textclf.serving.protocols.common import Adapter, Body, Call, ModelFacts, check_min_confidence
from textclf.serving.protocols.hf import HfAdapter
from textclf.serving.protocols.native import NativeAdapter
from textclf.serving.protocols.v2 import V2Adapter, model_metadata
from textclf.serving.wire import Reply

LIMITS = Limits(max_texts_per_request=4, max_chars_per_text=50, max_body_bytes=10_000, max_concurrency=4)
PLAIN = ModelFacts("textclf", "fp32", "ab" * 32, ["neg", "pos"], None, 128)
# A calibrated variant with a deploy threshold: probabilities of logits / 2, answers under 0.7 abstain.
CALIBRATED = ModelFacts("textclf", "fp32", "ab" * 32, ["neg", "pos"], None, 128, temperature=2.0, min_confidence=0.7)
MULTI = ModelFacts("textclf", "fp32", "cd" * 32, ["a", "b", "c"], 0.5, 128)
# Text 0: softmax(logits / 2) tops at 0.68 (abstains under 0.7); text 1: at 0.85 (answered).
LOGITS = np.array([[1.5, 0.0], [-1.5, 2.0]], dtype=np.float32)
BAD_VALUES = [True, "0.9", math.nan, math.inf, 1.5, -0.1, [0.5]]


def _body(payload: dict[str, Any]) -> Body:
    return Body(json.dumps(payload).encode())


def _scored(call: Call[Any], model: ModelFacts) -> list[Any]:
    """What `Classifier.predictions` gives the pipeline: the call's options, the variant's temperature, and the
    deploy's threshold where the call sends none."""
    options = call.answer.as_kwargs()
    if options["min_confidence"] is None:
        options["min_confidence"] = model.min_confidence
    logits = LOGITS[: len(call.texts)]
    return predictions(
        logits, [False] * len(logits), model.labels, model.threshold, temperature=model.temperature, **options
    )


def _answer(adapter: Adapter[Any], payload: dict[str, Any], model: ModelFacts) -> Any:
    call = adapter.parse(_body(payload), model)
    reply = adapter.render(call, _scored(call, model), model)
    assert reply.status == 200
    return json.loads(reply.body)


def _refusal(adapter: Adapter[Any], payload: dict[str, Any], model: ModelFacts = PLAIN) -> tuple[Reply, str]:
    with pytest.raises(RequestError) as caught:
        adapter.parse(_body(payload), model)
    reply = adapter.error(caught.value)
    return reply, json.loads(reply.body)["error"]


def test_the_rule_is_the_runtimes_and_names_each_protocols_field() -> None:
    assert check_min_confidence(None) is None  # absent: the deploy's threshold
    assert check_min_confidence(0) == 0.0 and check_min_confidence(1) == 1.0 and check_min_confidence(0.25) == 0.25
    for value in BAD_VALUES:
        with pytest.raises(RequestError, match=r"^parameters\.min_confidence must be a number in \[0, 1\]"):
            check_min_confidence(value, "parameters.min_confidence")
    with pytest.raises(RequestError, match="not null"):
        check_min_confidence(None, nullable=False)
    with pytest.raises(RequestError, match="multi-label model has no single confidence"):
        check_min_confidence(0.5, multi_label=True)


def test_native_answers_say_abstained_only_where_a_threshold_is_in_force() -> None:
    adapter = NativeAdapter(LIMITS)
    texts = ["a", "b"]
    assert all("abstained" not in p for p in _answer(adapter, {"texts": texts}, PLAIN))
    deploy = _answer(adapter, {"texts": texts}, CALIBRATED)
    assert [p["abstained"] for p in deploy] == [True, False]
    probs = softmax(LOGITS / 2.0)
    assert [p["score"] for p in deploy] == pytest.approx(probs.max(axis=1).tolist())  # the temperature applied
    assert [p["label"] for p in deploy] == ["neg", "pos"]  # label and scores stay
    # A request's own threshold replaces the deploy's, either way, and gives a plain model one.
    assert [p["abstained"] for p in _answer(adapter, {"texts": texts, "min_confidence": 0}, CALIBRATED)] == [False] * 2
    assert [p["abstained"] for p in _answer(adapter, {"texts": texts, "min_confidence": 0.99}, PLAIN)] == [True] * 2


@pytest.mark.parametrize("value", [*BAD_VALUES, None])
def test_a_bad_native_min_confidence_is_a_422_naming_the_field(value: object) -> None:
    reply, message = _refusal(NativeAdapter(LIMITS), {"texts": ["a"], "min_confidence": value})
    assert reply.status == 422 and json.loads(reply.body)["error_type"] == "invalid_request"
    assert message.startswith("min_confidence must be a number in [0, 1]")


def test_a_multi_label_model_refuses_min_confidence_on_every_route() -> None:
    cases: list[tuple[Adapter[Any], dict[str, Any]]] = [
        (NativeAdapter(LIMITS), {"texts": ["a"], "min_confidence": 0.5}),
        (HfAdapter("hub", LIMITS), {"inputs": "a", "parameters": {"min_confidence": 0.5}}),
        (V2Adapter(LIMITS), _v2({"min_confidence": 0.5})),
    ]
    for adapter, payload in cases:
        reply, message = _refusal(adapter, payload, MULTI)
        assert reply.status in (400, 422) and "multi-label model has no single confidence" in message
    native = NativeAdapter(LIMITS)  # the typed signature's path checks the model too
    with pytest.raises(RequestError, match="multi-label"):
        native.for_model(native.call(["a"], min_confidence=0.5), MULTI)
    assert native.for_model(native.call(["a"]), MULTI).answer.min_confidence is None


def test_hf_accepts_min_confidence_and_answers_in_its_own_shape() -> None:
    for adapter in (HfAdapter("hub", LIMITS), HfAdapter("tei", LIMITS)):
        plain = _answer(adapter, {"inputs": "a"}, CALIBRATED)
        asked = _answer(adapter, {"inputs": "a", "parameters": {"min_confidence": 0.99}}, CALIBRATED)
        assert asked == plain  # no field says it: the Hugging Face answer is {label, score} per class
        assert _answer(adapter, {"inputs": "a", "parameters": {"min_confidence": None}}, CALIBRATED) == plain
        reply, message = _refusal(adapter, {"inputs": "a", "parameters": {"min_confidence": "high"}})
        assert reply.status == 422 and json.loads(reply.body)["error_type"] == "Validation"
        assert message.startswith("parameters.min_confidence must be a number in [0, 1]")


def test_hf_functions_apply_to_the_temperature_scaled_logits() -> None:
    hub = HfAdapter("hub", LIMITS)
    scaled = LOGITS[:1].astype(np.float64) / 2.0
    own = _answer(hub, {"inputs": "a"}, CALIBRATED)[0]
    assert [p["score"] for p in own] == pytest.approx(softmax(scaled)[0].tolist())
    other = _answer(hub, {"inputs": "a", "parameters": {"function_to_apply": "sigmoid"}}, CALIBRATED)[0]
    assert {p["label"]: p["score"] for p in other} == pytest.approx(
        dict(zip(["neg", "pos"], sigmoid(scaled)[0], strict=True))
    )
    raw = _answer(hub, {"inputs": "a", "parameters": {"function_to_apply": "none"}}, CALIBRATED)[0]
    assert {p["label"]: p["score"] for p in raw} == {"neg": 1.5, "pos": 0.0}  # raw logits stay raw
    # A multi-label model's other function is the softmax, of its per-label scaled logits too.
    per_label = ModelFacts("textclf", "fp32", "cd" * 32, ["a", "b"], 0.5, 128, temperature=[2.0, 0.5])
    got = _answer(hub, {"inputs": "a", "parameters": {"function_to_apply": "softmax"}}, per_label)[0]
    expected = softmax(LOGITS[:1].astype(np.float64) / np.array([2.0, 0.5]))[0]
    assert {p["label"]: p["score"] for p in got} == pytest.approx(dict(zip(["a", "b"], expected, strict=True)))


def _v2(parameters: dict[str, Any] | None = None, outputs: list[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    if parameters is not None:
        payload["parameters"] = parameters
    if outputs is not None:
        payload["outputs"] = [{"name": name} for name in outputs]
    return payload


def test_v2_answers_a_bool_abstained_output_where_a_threshold_is_in_force() -> None:
    from tritonclient.http import InferResult

    adapter = V2Adapter(LIMITS)
    plain = _answer(adapter, _v2(), PLAIN)
    assert [o["name"] for o in plain["outputs"]] == ["label", "probabilities", "truncated"]
    for model, parameters, expected in [
        (CALIBRATED, None, [True, False]),  # the deploy's threshold
        (CALIBRATED, {"min_confidence": 0.0}, [False, False]),  # the request's own replaces it
        (PLAIN, {"min_confidence": 0.99}, [True, True]),
    ]:
        call = adapter.parse(_body(_v2(parameters)), model)
        reply = adapter.render(call, _scored(call, model), model)
        tensor = json.loads(reply.body)["outputs"][-1]
        assert tensor == {"name": "abstained", "datatype": "BOOL", "shape": [2], "data": expected}
        parsed = InferResult.from_response_body(reply.body)  # the real client's parser reads it
        assert parsed.as_numpy("abstained").tolist() == expected
    binary = adapter.parse(_body(_v2({"binary_data_output": True}, ["abstained"])), CALIBRATED)
    reply = adapter.render(binary, _scored(binary, CALIBRATED), CALIBRATED)
    length = int(dict(reply.headers)[b"inference-header-content-length"])
    assert InferResult.from_response_body(reply.body, header_length=length).as_numpy("abstained").tolist() == [
        True,
        False,
    ]


def test_v2_refusals_and_metadata() -> None:
    adapter = V2Adapter(LIMITS)
    reply, message = _refusal(adapter, _v2(outputs=["abstained"]))  # no threshold: nothing to say
    assert reply.status == 400 and "needs a threshold" in message and set(json.loads(reply.body)) == {"error"}
    for value in [*BAD_VALUES, None]:
        reply, message = _refusal(adapter, _v2({"min_confidence": value}))
        assert reply.status == 400 and message.startswith("parameters.min_confidence must be a number in [0, 1]")
    assert "abstained" not in [o["name"] for o in model_metadata(PLAIN, "openvino")["outputs"]]
    meta = model_metadata(CALIBRATED, "openvino")
    assert meta["outputs"][-1] == {"name": "abstained", "datatype": "BOOL", "shape": [-1]}
    assert meta["parameters"]["temperature"] == 2.0 and meta["parameters"]["min_confidence"] == 0.7


def test_model_facts_read_the_confidence_from_get_model() -> None:
    info = {"name": "m", "labels": ["a", "b"], "temperature": 1.7, "selective_threshold": {"min_confidence": 0.8}}
    facts = ModelFacts.from_info(info)
    assert facts.temperature == 1.7 and facts.min_confidence == 0.8
    bare = ModelFacts.from_info({"name": "m", "labels": ["a"], "selective_threshold": None})
    assert bare.temperature is None and bare.min_confidence is None
