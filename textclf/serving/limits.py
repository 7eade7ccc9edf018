"""The request limits, read from the config once.

One `Limits` object is built from `serve.*` when the service module loads; the service's typed signature (what
BentoML writes into /docs.json), the guard (body size, requests in flight, the deadline), every protocol adapter
(texts per request, characters per text) and the OpenAPI completion all read that one object, so a limit cannot
say one thing in the schema and another at the door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textclf.config import ServeConfig

# A text must hold something other than whitespace: the schema's pattern and the adapters' check say the same.
NON_BLANK_PATTERN = r"\S"


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a worker.

    Attributes:
        max_texts_per_request: texts in one request (413 `too_many_texts` past it).
        max_chars_per_text: characters in one text (413 `text_too_large`).
        max_body_bytes: bytes in one request body (413 `body_too_large`), checked while it arrives.
        max_concurrency: classifying requests held at once by this worker (503 `overloaded` past it).
        timeout_s: one deadline for a classifying request, from its first body byte to its answer (408 while
            the body is still arriving, 504 after).
        max_explain_texts: texts in one request that asks for explanations (413 `explain_too_large`).
        max_explain_words: words of one text an explanation covers (its first ones); each costs one more text.
        max_queued_texts: texts the batcher queues; an explained request whose texts and perturbed copies exceed
            it could never be queued (413 `explain_too_large`).
    """

    max_texts_per_request: int
    max_chars_per_text: int
    max_body_bytes: int
    max_concurrency: int
    timeout_s: float = 60.0
    max_explain_texts: int = 8
    max_explain_words: int = 64
    max_queued_texts: int = 2048

    @classmethod
    def from_config(cls, serve: ServeConfig) -> Limits:
        """The limits of a `serve` config section."""
        return cls(
            max_texts_per_request=serve.max_texts_per_request,
            max_chars_per_text=serve.max_chars_per_text,
            max_body_bytes=serve.max_body_bytes,
            max_concurrency=serve.max_concurrency,
            timeout_s=serve.timeout_s,
            max_explain_texts=serve.max_explain_texts,
            max_explain_words=serve.max_explain_words,
            max_queued_texts=serve.max_queued_texts,
        )
