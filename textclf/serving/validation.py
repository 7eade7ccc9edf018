"""What a valid `POST /predict` body is: the limits, and the checks that name the field at fault.

Checked in the guard before the project's batcher (`textclf.serving.batcher`) queues a request's texts, so one bad
request never fails an engine call holding other clients' texts. The OpenAPI document states the same limits
(`textclf.serving.openapi`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textclf.errors import RequestError
from textclf.inference.text_options import OVERLENGTH_POLICIES, TRUNCATION_DIRECTIONS

# A text must hold something other than whitespace: the schema's pattern and the check below say the same.
NON_BLANK_PATTERN = r"\S"


FIELDS = ("texts", "top_k", "raw_scores", "on_overlength", "truncation_direction")


@dataclass(frozen=True)
class PredictRequest:
    """A checked `POST /predict` body."""

    texts: list[str]
    top_k: int | None = None
    raw_scores: bool = False


@dataclass(frozen=True)
class Limits:
    max_texts_per_request: int
    max_chars_per_text: int
    max_body_bytes: int
    max_concurrency: int


def validate_payload(payload: Any, limits: Limits) -> PredictRequest:
    """A valid `{"texts": [...], "top_k"?: k, "raw_scores"?: bool}` body, or a RequestError naming the field."""
    check_fields(payload, "texts", FIELDS, '{"texts": ["..."]}')
    texts = payload["texts"]
    check_texts(texts, limits)
    top_k = payload.get("top_k")
    if "top_k" in payload:  # present means a count: null is refused like the schema says
        check_count(top_k, "top_k")
    raw_scores = payload.get("raw_scores", False)
    if not isinstance(raw_scores, bool):
        raise RequestError("invalid_request", f"'raw_scores' must be true or false, not {raw_scores!r}")
    check_choice(payload, "on_overlength", OVERLENGTH_POLICIES, nullable=False)
    check_choice(payload, "truncation_direction", TRUNCATION_DIRECTIONS, nullable=False)
    return PredictRequest(texts, top_k, raw_scores)


def check_fields(payload: Any, required: str, fields: tuple[str, ...], example: str) -> dict[str, Any]:
    """A JSON object holding `required` and nothing outside `fields`, or a RequestError naming what is wrong."""
    if not isinstance(payload, dict):
        raise RequestError("invalid_request", f"the body must be a JSON object: {example}")
    if required not in payload:
        raise RequestError("invalid_request", f"missing field {required!r}")
    extra = sorted(set(payload) - set(fields))
    if extra:
        raise RequestError("invalid_request", f"unknown field {extra[0]!r}; the fields are {', '.join(fields)}")
    return payload


def check_count(value: Any, name: str) -> int:
    """An integer of at least 1 (a bool, an int in Python, is no count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError("invalid_request", f"{name!r} must be an integer of at least 1, not {value!r}")
    return value


def check_choice(payload: dict[str, Any], name: str, choices: tuple[str, ...], *, nullable: bool) -> None:
    if name not in payload or (nullable and payload[name] is None):
        return
    if payload[name] not in choices:
        raise RequestError("invalid_request", f"{name!r} must be one of {', '.join(choices)}, not {payload[name]!r}")


def check_texts(texts: Any, limits: Limits, field: str = "texts") -> list[str]:
    """`texts` as a non-empty list of non-blank strings within the limits, or a RequestError naming the item
    (`field[i]`); every protocol's route checks its texts here."""
    if not isinstance(texts, list):
        raise RequestError("invalid_request", f"{field!r} must be a list of strings, not {type(texts).__name__}")
    if not texts:
        raise RequestError("invalid_request", f"{field!r} is empty; send at least one text")
    if len(texts) > limits.max_texts_per_request:
        raise RequestError(
            "too_many_texts", f"{len(texts)} texts in one request; the limit is {limits.max_texts_per_request}"
        )
    for index, text in enumerate(texts):
        check_text(text, limits, f"{field}[{index}]")
    return texts


def check_text(text: Any, limits: Limits, name: str) -> str:
    """One text: a non-blank string of at most `max_chars_per_text` characters, valid Unicode."""
    if not isinstance(text, str):
        raise RequestError("invalid_request", f"{name} must be a string, not {type(text).__name__}")
    if not text.strip():
        raise RequestError("empty_text", f"{name} is empty or whitespace only")
    limit = limits.max_chars_per_text
    if len(text) > limit:
        raise RequestError("text_too_large", f"{name} has {len(text)} characters; the limit is {limit}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800): JSON allows it, the tokenizer cannot take it
        raise RequestError("invalid_request", f"{name} is not valid Unicode (a lone surrogate)") from None
    return text
