"""How one request wants its texts tokenized: what happens past max_seq_len tokens (cut, refused or read in
windows), and which end is cut.

One small value passed from the HTTP layer through the batcher to the tokenizer (`Classifier.encode`), so a
per-request choice never changes the server's default (`serve.on_overlength`) for anyone else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

OverlengthPolicy = Literal["truncate", "error", "chunk"]
TruncationDirection = Literal["right", "left"]
OVERLENGTH_POLICIES: tuple[str, ...] = get_args(OverlengthPolicy)
TRUNCATION_DIRECTIONS: tuple[str, ...] = get_args(TruncationDirection)


@dataclass(frozen=True)
class TextOptions:
    """Per-request tokenization choices.

    Attributes:
        on_overlength: `truncate` cuts a text at max_seq_len tokens (and flags it), `error` refuses it (422),
            `chunk` classifies it in overlapping windows of max_seq_len tokens and aggregates their logits
            (`textclf.inference.windows`); None keeps the server's `serve.on_overlength`.
        truncation_direction: `right` keeps a cut text's beginning, `left` its end (no effect on `chunk`: its
            windows cover the whole text).
    """

    on_overlength: OverlengthPolicy | None = None
    truncation_direction: TruncationDirection = "right"


DEFAULT_OPTIONS = TextOptions()
