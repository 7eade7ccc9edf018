"""What a protocol adapter is: a parsed call, a reply, and the model facts every protocol names."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from textclf.errors import RequestError
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions


@dataclass(frozen=True)
class Reply:
    """A finished HTTP answer."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        return cls(status, json.dumps(value).encode(), "application/json", headers or [])


@dataclass(frozen=True)
class ModelFacts:
    """The served model as the protocols describe it (from the manifest, through the service's model state)."""

    name: str
    variant: str
    sha256: str
    labels: list[str]
    threshold: float | None  # multi-label: the probability cut-off; None for a single-label model
    max_seq_len: int

    @property
    def multi_label(self) -> bool:
        return self.threshold is not None

    @property
    def version(self) -> str:
        """The version the protocols name: the model file's sha256, cut to 12 hex digits (Git's habit)."""
        return self.sha256[:12] or "1"

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ModelFacts:
        return cls(
            name=str(info.get("name", "")),
            variant=str(info.get("variant", "")),
            sha256=str(info.get("sha256", "")),
            labels=list(info.get("labels", [])),
            threshold=info.get("threshold"),
            max_seq_len=int(info.get("max_seq_len", 0)),
        )


@dataclass(frozen=True)
class Call:
    """One protocol request as a predict call: its texts, how to tokenize them, and how to answer."""

    texts: list[str]
    render: Callable[[np.ndarray, list[bool]], Reply]  # logits (input order), truncation flags -> the answer
    options: TextOptions = DEFAULT_OPTIONS


class Adapter(Protocol):
    """A protocol's two directions; the guard does everything in between."""

    @property
    def name(self) -> str:
        """The protocol's name in the request log."""
        ...

    def parse(self, body: bytes, content_type: bytes | None, model: ModelFacts) -> Call:
        """The call a request body asks for; raises RequestError naming the field at fault."""
        ...

    def error(self, exc: RequestError) -> Reply:
        """An error in this protocol's shape."""
        ...


def parse_json(body: bytes) -> Any:
    """A request body as JSON, or the project's invalid_json error."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError("invalid_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError("invalid_json", "the body nests too deeply to be a request") from None
