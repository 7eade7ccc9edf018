"""PyTorch reference logits: what every ONNX variant is compared against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textclf.inference.model_inputs import accepted_inputs
from textclf.inference.runtime import length_order


def pytorch_logits(checkpoint: Path, texts: list[str], max_seq_len: int, batch_size: int = 32) -> np.ndarray:
    """Logits of the checkpoint in eager fp32, in input order (texts sorted by length inside, like the runtime)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_seq_len)["input_ids"]]
    order = length_order(lengths)
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in chunk], truncation=True, max_length=max_seq_len, padding=True, return_tensors="pt"
            )
            out[chunk] = model(**accepted_inputs(model.forward, batch)).logits.float().numpy()
    return out
