"""What every protocol adapter shares: the request body, the one call type, the model facts, the adapter's shape.

An adapter turns its wire request into a `Call` (texts, how to tokenize them, how to score them, and whatever its
renderer needs of the request) and renders the pipeline's `Prediction`s (`textclf.inference.predictions`) back
into its wire answer. A new request option is one field of `AnswerOptions` (and of `Classifier.predictions`); a
new answer field is one field of `Prediction`; each adapter only says whether its protocol carries it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, TypeVar

from textclf.errors import RequestError
from textclf.inference.confidence import request_threshold
from textclf.inference.predictions import Prediction
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions
from textclf.serving.wire import Reply

W = TypeVar("W")  # what one protocol's renderer needs of its request (a batch flag, requested outputs, ...)
_UNDECODED = object()


class Body:
    """A request body, decoded from JSON at most once: the route that picks an adapter by the body's fields and
    the adapter that reads them share one decode."""

    def __init__(self, raw: bytes, header_length: bytes | None = None) -> None:
        self.raw = raw
        self.header_length = header_length  # Triton's binary extension: the JSON header's byte count
        self._decoded: Any = _UNDECODED

    def json(self) -> Any:
        """The body as JSON, or the project's `invalid_json` error."""
        if self._decoded is _UNDECODED:
            self._decoded = parse_json(self.raw)
        return self._decoded


@dataclass(frozen=True)
class AnswerOptions:
    """How a call's predictions are scored: each field is a keyword of `Classifier.predictions`.

    Attributes:
        top_k: only the k best classes in `scores`, best first; None keeps every class in label order.
        raw_scores: the logits instead of the model's probabilities in `score` and `scores`.
        min_confidence: the request's own selective threshold (each answer says whether it is `abstained`); None:
            the deploy's (`serve.min_confidence` / `serve.target_accuracy`), if any.
    """

    top_k: int | None = None
    raw_scores: bool = False
    min_confidence: float | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """The options as `Classifier.predictions` keywords (every field, by its name)."""
        return {name: getattr(self, name) for name in _ANSWER_FIELDS}


# Read once: `dataclasses.asdict` would copy the values recursively for every request.
_ANSWER_FIELDS = tuple(f.name for f in fields(AnswerOptions))
DEFAULT_ANSWER = AnswerOptions()


@dataclass(frozen=True)
class Call(Generic[W]):
    """One request of any protocol as the pipeline runs it."""

    texts: list[str]
    wire: W  # what the protocol's renderer needs of the request; None where it needs nothing
    options: TextOptions = DEFAULT_OPTIONS  # how the texts are tokenized (over-length policy, cut side)
    answer: AnswerOptions = DEFAULT_ANSWER  # how they are scored (top_k, raw_scores)
    # Explain each prediction with this many words per label (`textclf.serving.explaining`); None: no explanation.
    explain_words: int | None = None


@dataclass(frozen=True)
class ModelFacts:
    """The served model as the protocols describe it (from the manifest, through the service's model state)."""

    name: str
    variant: str
    sha256: str
    labels: list[str]
    threshold: float | None  # multi-label: the probability cut-off; None for a single-label model
    max_seq_len: int
    temperature: float | list[float] | None = None  # the served variant's fitted temperature (None: raw scores)
    min_confidence: float | None = None  # the deploy's selective threshold (None: no answer abstains by default)

    @property
    def multi_label(self) -> bool:
        return self.threshold is not None

    @property
    def version(self) -> str:
        """The version the protocols name: the model file's sha256, cut to 12 hex digits (Git's habit)."""
        return self.sha256[:12] or "1"

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ModelFacts:
        """The facts in a `GET /model` answer."""
        return cls(
            name=str(info.get("name", "")),
            variant=str(info.get("variant", "")),
            sha256=str(info.get("sha256", "")),
            labels=list(info.get("labels", [])),
            threshold=info.get("threshold"),
            max_seq_len=int(info.get("max_seq_len", 0)),
            temperature=info.get("temperature"),
            min_confidence=(info.get("selective_threshold") or {}).get("min_confidence"),
        )


class Adapter(Protocol[W]):
    """One protocol's two directions and its error shape; the guard and the pipeline do everything between."""

    @property
    def name(self) -> str:
        """The protocol's name in the request log."""
        ...

    def parse(self, body: Body, model: ModelFacts) -> Call[W]:
        """The call a request body asks for; raises RequestError naming the field at fault."""
        ...

    def render(self, call: Call[W], predictions: list[Prediction], model: ModelFacts) -> Reply:
        """The protocol's answer: one prediction per text of the call, in order."""
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


def check_min_confidence(
    value: Any, field: str = "min_confidence", *, multi_label: bool = False, nullable: bool = True
) -> float | None:
    """A request's own selective threshold: a number in [0, 1] (`request_threshold`'s rule, the runtime's own), or
    None (absent, or null where `nullable`: the deploy's threshold holds).

    Raises:
        RequestError: (invalid_request, 422) naming `field`: a bool, a string, NaN or a number out of [0, 1]; null
            where not `nullable`; any value for a multi-label model (a label set has no single confidence).
    """
    if value is None and not nullable:
        raise RequestError("invalid_request", f"{field} must be a number in [0, 1], not null")
    try:
        return request_threshold(value, None, multi_label=multi_label)
    except RequestError as exc:  # its message names the native field; each protocol names its own
        raise RequestError(exc.error_type, str(exc).replace("min_confidence", field, 1)) from None


def refuse_explain(payload: dict[str, Any], where: str = "") -> None:
    """Explanations are textclf's own answer field: another protocol's request asking for one (`explain` in
    `payload`, which sits at `where` in the body) is a 422 naming it, rather than an answer without what was asked."""
    if "explain" in payload:
        raise RequestError(
            "invalid_request",
            f"'{where}explain': explanations are answered on textclf's own POST /predict "
            '{"texts": [...], "explain": true}; this protocol has no field for them',
        )


def retry_after(status: int, retry_statuses: tuple[int, ...] = (503,)) -> list[tuple[bytes, bytes]]:
    """`Retry-After: 1` on the statuses that ask a client to come back (overload, a restarting engine)."""
    return [(b"retry-after", b"1")] if status in retry_statuses else []
