"""How encoded texts become one engine call: the length order texts are grouped in, and the padded inputs of a call.

The runtime (`textclf.inference.runtime.Classifier`), bulk prediction, export's PyTorch reference and the benchmarks'
sorted case all group and pad texts this way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Positions sorted by length (stable): texts batched in this order pad little. The runtime, bulk prediction,
    export's PyTorch reference and the benchmarks' sorted case all group texts this way."""
    return sorted(range(len(lengths)), key=lengths.__getitem__)


@dataclass(frozen=True)
class Batch:
    """Padded model inputs for texts in a given order, and which texts were truncated."""

    inputs: dict[str, np.ndarray]
    truncated: list[bool]
    tokens: int  # real (non-padding) tokens in the batch


def pad_encodings(encodings: Sequence[Any], pad_id: int, input_names: Sequence[str]) -> Batch:
    """Pad `tokenizers` encodings, in the order given, to the longest of them; `input_names` are the graph's
    inputs (a DistilBERT-style graph takes no token_type_ids)."""
    longest = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), longest), dtype=np.int64)
    types = np.zeros((len(encodings), longest), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = 1
        types[row, :n] = encoding.type_ids
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    inputs = {name: available[name] for name in input_names}
    return Batch(inputs, [bool(e.overflowing) for e in encodings], int(mask.sum()))
