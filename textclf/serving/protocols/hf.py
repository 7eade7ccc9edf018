"""The Hugging Face text-classification shape: the Hub's task API (what `InferenceClient(base_url).
text_classification` posts to `/`) and text-embeddings-inference's `POST /predict` with `{"inputs": ...}`.

Both take `{"inputs": ..., "parameters": {"top_k", "function_to_apply", "min_confidence"}, "truncate",
"truncation_direction", "raw_scores"}` and answer a list of `{"label", "score"}` per text, best first (the scores
are the served variant's calibrated ones: `function_to_apply` applies to the temperature-scaled logits, `none`
gives the raw logits). `parameters.min_confidence` is accepted and checked like the native field, but the answers
carry no `abstained` field: the shape has none, and its clients would not read it. They differ in what a list means:
- `hub` (`POST /`): a string is one text, a list of strings a batch; the answer is always one list per text
  (`[[...]]` for one text), which is what `InferenceClient` unpacks.
- `tei` (`POST /predict`): TEI's own rules: a string, or a list of one string, is one text (answered with one
  flat list); a list of two strings is a text *pair*; a batch is a list of lists (`[["a"], ["b"]]`, answered
  with one list per text). textclf classifies single texts only: a pair is answered 422 naming it.
Errors use TEI's shape, `{"error", "error_type"}` with TEI's error types (Validation, Empty, Overloaded, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from textclf.errors import RequestError
from textclf.inference.predictions import Prediction, calibrated_probabilities
from textclf.inference.text_options import OverlengthPolicy, TextOptions
from textclf.serving.limits import Limits
from textclf.serving.protocols.common import (
    AnswerOptions,
    Body,
    Call,
    ModelFacts,
    check_min_confidence,
    refuse_explain,
    retry_after,
)
from textclf.serving.validation import check_count, check_fields, check_flag, check_texts
from textclf.serving.wire import Reply

Dialect = Literal["hub", "tei"]
Function = Literal["softmax", "sigmoid", "none"]
FIELDS = ("inputs", "parameters", "truncate", "truncation_direction", "raw_scores")
PARAMETERS = ("top_k", "function_to_apply", "min_confidence")
FUNCTIONS: tuple[Function, ...] = ("softmax", "sigmoid", "none")
PAIRS_REFUSED = (
    "text pairs are not supported: this model classifies single texts; send one text as a string, "
    'or a batch as [["text one"], ["text two"]]'
)
# Our error types in TEI's vocabulary, with the status TEI gives them where it differs from ours.
_TEI_ERRORS: dict[str, tuple[str, int | None]] = {
    "empty_text": ("Empty", 400),
    "overloaded": ("Overloaded", 429),
    "engine_unavailable": ("Unhealthy", 503),
    "timeout": ("Backend", None),
    "internal": ("Backend", None),
    "unauthorized": ("Unauthorized", None),  # TEI answers a bad key with a bare 401; the body names it here
}


@dataclass(frozen=True)
class HfWire:
    """What the renderer needs of a request: whether it was a batch, and a function other than the model's own."""

    is_batch: bool
    # softmax on a multi-label model, or sigmoid on a single-label one: applied here to the logits scaled by the
    # variant's temperature, and the best `top_k` kept here. The model's own function is its probabilities and
    # `none` its raw logits: the pipeline's predictions carry either, already ranked and cut to top_k.
    function: Function | None = None
    top_k: int = 0


@dataclass(frozen=True)
class HfAdapter:
    """One dialect of the Hugging Face shape."""

    dialect: Dialect
    limits: Limits

    @property
    def name(self) -> str:
        return "hf" if self.dialect == "hub" else "tei"

    def parse(self, body: Body, model: ModelFacts) -> Call[HfWire]:
        """The call of a request body, or a RequestError naming the field."""
        payload = body.json()
        if isinstance(payload, dict):
            refuse_explain(payload)
            if isinstance(payload.get("parameters"), dict):
                refuse_explain(payload["parameters"], "parameters.")
        check_fields(payload, "inputs", FIELDS, '{"inputs": "..."}')
        texts, is_batch = self._inputs(payload["inputs"])
        check_texts(texts, self.limits, "inputs")
        top_k, function = self._parameters(payload.get("parameters"))
        # The Hub's parameters are nullable: null is the deploy's threshold, as absent is.
        parameters = payload.get("parameters") or {}
        min_confidence = check_min_confidence(
            parameters.get("min_confidence"), "parameters.min_confidence", multi_label=model.multi_label
        )
        if check_flag(payload, "raw_scores"):
            function = "none"
        own: Function = "sigmoid" if model.multi_label else "softmax"
        # Every answer lists its classes best first: top_k of all of them when the request names no k.
        k = len(model.labels) if top_k is None else min(top_k, len(model.labels))
        if function in (None, own):
            answer, other = AnswerOptions(top_k=k, min_confidence=min_confidence), None
        elif function == "none":
            answer, other = AnswerOptions(top_k=k, raw_scores=True, min_confidence=min_confidence), None
        else:  # the other function, over the logits in label order; ranked by the renderer
            answer, other = AnswerOptions(raw_scores=True, min_confidence=min_confidence), function
        return Call(texts, HfWire(is_batch, other, k), self._options(payload), answer)

    def _inputs(self, inputs: Any) -> tuple[list[str], bool]:
        if isinstance(inputs, str):
            return [inputs], False
        if not isinstance(inputs, list) or not inputs:
            raise RequestError("invalid_request", "'inputs' must be a string or a non-empty list")
        if self.dialect == "hub":
            return inputs, True
        if all(isinstance(item, str) for item in inputs):  # TEI: one text, or a pair
            if len(inputs) == 1:
                return inputs, False
            if len(inputs) == 2:
                raise RequestError("invalid_request", f"'inputs': {PAIRS_REFUSED}")
            raise RequestError("invalid_request", "'inputs': a list of strings holds one text or a pair of two")
        texts = []
        for index, item in enumerate(inputs):
            if not isinstance(item, list) or not item or len(item) > 2:
                raise RequestError("invalid_request", f"inputs[{index}] must be a list of one text (a batch item)")
            if len(item) == 2:
                raise RequestError("invalid_request", f"inputs[{index}]: {PAIRS_REFUSED}")
            texts.append(item[0])
        return texts, True

    @staticmethod
    def _parameters(parameters: Any) -> tuple[int | None, Function | None]:
        if parameters is None:
            return None, None
        if not isinstance(parameters, dict):
            raise RequestError("invalid_request", "'parameters' must be an object")
        extra = sorted(set(parameters) - set(PARAMETERS))
        if extra:
            raise RequestError(
                "invalid_request", f"unknown parameter {extra[0]!r}; the parameters are {', '.join(PARAMETERS)}"
            )
        top_k = parameters.get("top_k")
        if top_k is not None:  # the Hub's parameters are nullable
            check_count(top_k, "parameters.top_k")
        function = parameters.get("function_to_apply")
        if function is not None and function not in FUNCTIONS:
            raise RequestError(
                "invalid_request",
                f"'parameters.function_to_apply' must be one of {', '.join(FUNCTIONS)}, not {function!r}",
            )
        return top_k, cast(Function | None, function)  # checked just above

    @staticmethod
    def _options(payload: dict[str, Any]) -> TextOptions:
        truncate = payload.get("truncate")
        if truncate is not None and not isinstance(truncate, bool):
            raise RequestError("invalid_request", f"'truncate' must be true or false, not {truncate!r}")
        direction = payload.get("truncation_direction", "right")
        # TEI accepts both spellings ("Left" is its serde name, "left" its alias).
        if not isinstance(direction, str) or direction.lower() not in ("left", "right"):
            raise RequestError("invalid_request", f"'truncation_direction' must be left or right, not {direction!r}")
        policy: OverlengthPolicy | None = None if truncate is None else ("truncate" if truncate else "error")
        return TextOptions(policy, "left" if direction.lower() == "left" else "right")

    def render(self, call: Call[HfWire], predictions: list[Prediction], model: ModelFacts) -> Reply:
        """One list of `{label, score}` per text, best first; TEI answers a single text with its list alone."""
        if call.wire.function is None:
            per_text = [[{"label": label, "score": score} for label, score in p.scores.items()] for p in predictions]
        else:
            per_text = self._ranked(call, predictions, model)
        if self.dialect == "tei" and not call.wire.is_batch:
            return Reply.json(200, per_text[0])
        return Reply.json(200, per_text)

    @staticmethod
    def _ranked(call: Call[HfWire], predictions: list[Prediction], model: ModelFacts) -> list[list[dict[str, Any]]]:
        """The asked function of each text's logits scaled by the served temperature (label order, float32 as the
        engine gave them), top k: the same calibration as the model's own function, only the function differs."""
        logits = np.array([list(p.scores.values()) for p in predictions], dtype=np.float32)
        scores = calibrated_probabilities(logits, model.temperature, multi_label=call.wire.function == "sigmoid")
        return [
            [
                {"label": model.labels[i], "score": float(row[i])}
                for i in np.argsort(-row, kind="stable")[: call.wire.top_k]
            ]
            for row in scores
        ]

    def error(self, exc: RequestError) -> Reply:
        """TEI's error body; `Retry-After` on an overload, as on the native route."""
        error_type, status = _TEI_ERRORS.get(exc.error_type, ("Validation", None))
        status = status or exc.status
        return Reply.json(status, {"error": str(exc), "error_type": error_type}, retry_after(status, (429, 503)))


def is_tei_request(payload: Any) -> bool:
    """Whether a decoded `/predict` body is text-embeddings-inference's (`inputs`, no `texts`) rather than ours."""
    return isinstance(payload, dict) and "inputs" in payload and "texts" not in payload
