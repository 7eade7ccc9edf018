"""Long documents read in windows (`on_overlength: chunk`): a text past max_seq_len tokens becomes overlapping
windows of max_seq_len tokens, each its own model input ([CLS] … [SEP]), each run through the engine like any other
text; the document's answer aggregates its windows' logits.

The tokenizer cuts the windows itself (`enable_truncation(max_length, stride=overlap)`): the first window's
`overflowing` holds the others, each already post-processed with the model's special tokens, so nothing is
tokenized twice. Aggregation: the mean of the windows' logits for a single-label model (every window votes with its
confidence), the max per label for a multi-label model (a label any part of the document shows is the document's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, get_args

import numpy as np

from textclf.errors import RequestError

logger = logging.getLogger(__name__)

E = TypeVar("E")  # one window (a `tokenizers.Encoding` in the runtime)
Aggregation = Literal["mean", "max"]
AggregationSetting = Literal["auto", "mean", "max"]  # auto: mean for single-label, max for multi-label
AGGREGATIONS: tuple[str, ...] = get_args(AggregationSetting)


class TooManyChunks(RequestError):
    """A text, or a whole request, needs more windows than the server's limit (413, naming the limit)."""

    def __init__(self, message: str) -> None:
        super().__init__("too_many_chunks", message)


def aggregation_for(setting: AggregationSetting, multi_label: bool) -> Aggregation:
    """The aggregation a model uses: the setting, or for `auto` mean (single-label) / max (multi-label)."""
    if setting == "auto":
        return "max" if multi_label else "mean"
    if setting not in ("mean", "max"):
        raise ValueError(f"chunk aggregation must be one of {AGGREGATIONS}, got {setting!r}")
    return setting


def window_overlap(overlap_tokens: int, window_text_tokens: int) -> int:
    """The overlap the tokenizer can take: at most half of a window's text tokens (the tokenizer refuses an overlap
    of a whole window, and past half a document's windows multiply for little gain)."""
    if window_text_tokens < 1:
        raise ValueError(f"a window of {window_text_tokens} text tokens holds nothing; max_seq_len is too small")
    ceiling = window_text_tokens // 2
    if overlap_tokens > ceiling:
        logger.info("chunk overlap %d tokens capped at %d (half a window's text)", overlap_tokens, ceiling)
    return min(max(0, overlap_tokens), ceiling)


def aggregate(logits: np.ndarray, counts: Sequence[int], how: Aggregation) -> np.ndarray:
    """One row per document from its windows' rows (documents' windows consecutive, `counts[i]` of them each)."""
    if not counts:
        return np.zeros((0, logits.shape[1] if logits.ndim == 2 else 0), dtype=np.float32)
    starts = np.concatenate(([0], np.cumsum(counts[:-1]))).astype(np.intp)
    if how == "max":
        result: np.ndarray = np.maximum.reduceat(logits, starts, axis=0)
        return result.astype(np.float32)
    sums = np.add.reduceat(logits.astype(np.float64), starts, axis=0)
    means: np.ndarray = sums / np.asarray(counts, dtype=np.float64)[:, None]
    return means.astype(np.float32)


@dataclass(frozen=True)
class Windows(Generic[E]):
    """A request's texts as the engine's inputs: every text's windows (one for a short text), text after text."""

    units: list[E]
    counts: list[int]  # windows per text, in the texts' order
    aggregation: Aggregation

    @classmethod
    def of(cls, encodings: Sequence[Any], aggregation: Aggregation) -> Windows[Any]:
        """The windows of encodings made by a tokenizer with truncation and a stride: each one and its
        `overflowing`."""
        units: list[Any] = []
        counts: list[int] = []
        for encoding in encodings:
            rest = encoding.overflowing
            units.append(encoding)
            units.extend(rest)
            counts.append(1 + len(rest))
        return cls(units, counts, aggregation)

    def aggregate(self, logits: np.ndarray) -> np.ndarray:
        """Each text's row from its windows' logits (`logits`: one row per unit, in `units`' order)."""
        return aggregate(logits, self.counts, self.aggregation)

    def check(
        self, max_per_text: int, max_per_request: int, request_limit: str = "serve.max_chunks_per_request"
    ) -> None:
        """Raise TooManyChunks when a text or the whole request needs more windows than the limits allow; the
        messages name the limits (`request_limit`: the key of `max_per_request`)."""
        for index, count in enumerate(self.counts):
            if count > max_per_text:
                raise TooManyChunks(
                    f"texts[{index}] needs {count} windows; the limit is serve.max_chunks_per_text={max_per_text}"
                )
        if len(self.units) > max_per_request:
            raise TooManyChunks(
                f"the request needs {len(self.units)} windows; the limit is {request_limit}={max_per_request}"
            )
