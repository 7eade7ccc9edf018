"""The checks every protocol's adapter runs on its request: each names the field at fault.

They run in the guard's route, before the batcher queues a request's texts, so one bad request never fails an
engine call holding other clients' texts. The limits come from the one `textclf.serving.limits.Limits`.
"""

from __future__ import annotations

from typing import Any

from textclf.errors import RequestError
from textclf.serving.limits import Limits


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


def check_flag(payload: dict[str, Any], name: str, default: bool = False) -> bool:
    """A true/false field of the payload (absent: `default`; null is refused like any other non-boolean)."""
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise RequestError("invalid_request", f"{name!r} must be true or false, not {value!r}")
    return value


def check_choice(payload: dict[str, Any], name: str, choices: tuple[str, ...], *, nullable: bool) -> None:
    """A field that, when present (and, if `nullable`, not null), is one of `choices`."""
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
