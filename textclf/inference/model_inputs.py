"""Which of a tokenizer's outputs a PyTorch model takes: shared by export's reference logits and the benchmarks'
PyTorch engine (the runtime itself is torch-free and matches ONNX inputs by the graph's input names)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def accepted_inputs(forward: Callable[..., Any], batch: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a tokenizer's output that a model's `forward` takes (all of them if it takes **kwargs).

    A DistilBERT-style model has no `token_type_ids`, while its tokenizer may still emit them; the ONNX path does
    the same by the graph's input names.
    """
    parameters = inspect.signature(forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(batch)
    return {name: value for name, value in batch.items() if name in parameters}
