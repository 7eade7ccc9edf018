"""textclf's own shape: `POST /predict {"texts": [...], ...}` → one prediction per text, and `{error, error_type}`.

The body is read here, once: the route already decoded it to tell TEI's `{"inputs": ...}` from ours (both post
to `/predict`), so this adapter checks the decoded fields rather than hand the bytes to BentoML to decode again.
The checks say what the service's typed signature says (the same `Limits`), and name the field at fault.
Where a selective threshold is in force (the deploy's, or the request's own `min_confidence`), each prediction
carries `abstained: true|false`; label and scores stay, the client decides. `"explain": true` adds each
prediction's word attributions (`top_k_words` per label; `textclf.serving.explaining`), for at most
`serve.max_explain_texts` texts a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from textclf.errors import RequestError
from textclf.inference.explain import DEFAULT_TOP_K_WORDS
from textclf.inference.predictions import Prediction
from textclf.inference.text_options import (
    OVERLENGTH_POLICIES,
    TRUNCATION_DIRECTIONS,
    OverlengthPolicy,
    TextOptions,
    TruncationDirection,
)
from textclf.serving.limits import Limits
from textclf.serving.protocols.common import (
    AnswerOptions,
    Body,
    Call,
    ModelFacts,
    check_min_confidence,
    retry_after,
)
from textclf.serving.validation import check_choice, check_count, check_fields, check_flag, check_texts
from textclf.serving.wire import Reply

FIELDS = (
    "texts",
    "top_k",
    "raw_scores",
    "on_overlength",
    "truncation_direction",
    "min_confidence",
    "explain",
    "top_k_words",
)


def error_body(exc: RequestError) -> dict[str, str]:
    """The project's error body: the message (naming the field at fault) and its type."""
    return {"error": str(exc), "error_type": exc.error_type}


@dataclass(frozen=True)
class NativeAdapter:
    """`POST /predict` in textclf's own shape."""

    limits: Limits

    @property
    def name(self) -> str:
        return "textclf"

    def parse(self, body: Body, model: ModelFacts) -> Call[None]:
        """The call of a `/predict` body, or a RequestError naming the field."""
        return self.for_model(self.read(body.json()), model)

    @staticmethod
    def for_model(call: Call[None], model: ModelFacts) -> Call[None]:
        """The call, checked against the served model: a multi-label model refuses `min_confidence` (422)."""
        check_min_confidence(call.answer.min_confidence, multi_label=model.multi_label)
        return call

    def read(self, payload: Any) -> Call[None]:
        """The call of a decoded `{"texts": [...], "top_k"?, "raw_scores"?, "on_overlength"?,
        "truncation_direction"?, "min_confidence"?}` body, or a RequestError naming the field."""
        check_fields(payload, "texts", FIELDS, '{"texts": ["..."]}')
        texts = check_texts(payload["texts"], self.limits)
        top_k = payload.get("top_k")
        if "top_k" in payload:  # present means a count: null is refused, as the schema says
            check_count(top_k, "top_k")
        raw_scores = check_flag(payload, "raw_scores")
        # Absent means the server's policy; null is refused (the schema says a string).
        check_choice(payload, "on_overlength", OVERLENGTH_POLICIES, nullable=False)
        check_choice(payload, "truncation_direction", TRUNCATION_DIRECTIONS, nullable=False)
        # Absent: the deploy's threshold; null is refused (the schema says a number).
        min_confidence = check_min_confidence(payload.get("min_confidence"), nullable="min_confidence" not in payload)
        explain = check_flag(payload, "explain")
        # Present means a count: null is refused, as the schema says. Without `explain` it is checked and unused: the
        # typed schema cannot tie one field to another, and a body it calls valid is not refused.
        if "top_k_words" in payload:
            check_count(payload["top_k_words"], "top_k_words")
        explain_words = self.explain_words(explain, payload.get("top_k_words", DEFAULT_TOP_K_WORDS), len(texts))
        return self.call(
            texts,
            top_k=top_k,
            raw_scores=raw_scores,
            on_overlength=payload.get("on_overlength"),
            truncation_direction=payload.get("truncation_direction", "right"),
            min_confidence=min_confidence,
            explain_words=explain_words,
        )

    def explain_words(self, explain: bool, top_k_words: int, texts: int) -> int | None:
        """Words per label of the explanation a request asks for (None: none), within `max_explain_texts`.

        Raises:
            RequestError: (explain_too_large, 413) more texts than `max_explain_texts`.
        """
        if not explain:
            return None
        if texts > self.limits.max_explain_texts:
            raise RequestError(
                "explain_too_large",
                f"{texts} texts asked for explanations; the limit is {self.limits.max_explain_texts} "
                "(serve.max_explain_texts): each word of each text is classified again",
            )
        return top_k_words

    @staticmethod
    def call(
        texts: list[str],
        *,
        top_k: int | None = None,
        raw_scores: bool = False,
        on_overlength: OverlengthPolicy | None = None,
        truncation_direction: TruncationDirection = "right",
        min_confidence: float | None = None,
        explain_words: int | None = None,
    ) -> Call[None]:
        """The call of checked fields (from a body, or from the service's typed `predict` signature)."""
        return Call(
            texts,
            None,
            TextOptions(on_overlength, truncation_direction),
            AnswerOptions(top_k=top_k, raw_scores=raw_scores, min_confidence=min_confidence),
            explain_words,
        )

    def render(self, call: Call[None], predictions: list[Prediction], model: ModelFacts) -> Reply:
        """A JSON list, one prediction per text, in order (`Prediction.as_dict`, as bulk output writes them)."""
        return Reply(200, json.dumps([p.as_dict() for p in predictions]).encode())

    def error(self, exc: RequestError) -> Reply:
        """An error in the project's shape (`Retry-After` on a 503: overload and a restarting engine pass)."""
        return Reply.json(exc.status, error_body(exc), retry_after(exc.status))
