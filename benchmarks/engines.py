"""The engines under test, behind one interface: PyTorch (eager, compiled, fp16 on CUDA) and the exported variants
loaded through `textclf.inference.runtime`. Each has a `name` (its sweep label), a `kind` and a `variant`;
`fixed(batch, seq_len)` and `prepare_texts(texts)` prepare inputs for `run_prepared` (the model or engine alone), and
`run_texts(texts)` is the whole path a server runs (tokenize, pad, infer, softmax).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textclf.inference.model_inputs import accepted_inputs
from textclf.inference.runtime import Classifier
from textclf_benchmarks.envelope import engine_label

logger = logging.getLogger(__name__)


def synthetic_ids(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> np.ndarray:
    """Random in-vocabulary token ids with [CLS] ... [SEP]-like ends; content does not change the cost."""
    rng = np.random.default_rng(seed)
    low = min(1000, vocab_size // 2)  # past the special tokens of a BERT vocabulary
    ids = rng.integers(low, vocab_size, size=(batch, seq_len), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101 % vocab_size, 102 % vocab_size
    return ids


@dataclass
class RuntimeEngine:
    """A loaded `Classifier` (one variant, or what `Classifier.from_run` gives the service): `run_texts` is the
    service's whole path, `run_prepared` its engine alone (`classifier.engine.run`)."""

    classifier: Classifier
    vocab_size: int
    name: str = ""
    kind: str = field(init=False)
    variant: str | None = None
    io_binding: bool = False

    def __post_init__(self) -> None:
        self.kind = self.classifier.engine.name
        self.variant = self.classifier.variant
        self.name = self.name or engine_label(self.classifier.variant)

    def fixed(self, batch: int, seq_len: int) -> dict[str, np.ndarray]:
        ids = synthetic_ids(batch, seq_len, self.vocab_size)
        available = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return {name: available[name] for name in self.classifier.engine.input_names}

    def run_prepared(self, prepared: dict[str, np.ndarray]) -> None:
        if not self.io_binding:
            self.classifier.engine.run(prepared)
            return
        # IO binding keeps inputs and outputs on the device: no host copies inside the timed call.
        session = getattr(self.classifier.engine, "session", None)
        if session is None:
            raise RuntimeError(f"{self.name}: IO binding needs an ONNX Runtime session ({self.classifier.engine})")
        binding = session.io_binding()
        for name, array in prepared.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(session.get_outputs()[0].name, "cuda")
        session.run_with_iobinding(binding)

    def prepare_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.classifier.pad(self.classifier.encode(texts)).inputs

    def run_texts(self, texts: list[str]) -> None:
        self.classifier.predict(texts)


@dataclass
class TorchEngine:
    """The checkpoint in PyTorch, as the usual serving code runs it (tokenizer + model, no_grad)."""

    checkpoint: Path
    max_seq_len: int
    device: str = "cpu"
    fp16: bool = False
    compile: bool = False
    name: str = "pytorch-fp32"
    kind: str = "pytorch"
    variant: str | None = None
    model: Any = field(init=False)
    tokenizer: Any = field(init=False)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.checkpoint)
        model = AutoModelForSequenceClassification.from_pretrained(self.checkpoint).eval().to(self.device)
        self.vocab_size = int(model.config.vocab_size)
        if self.fp16:
            model = model.half()
        if self.compile:
            model = torch.compile(model, dynamic=True)
        self.model = model

    def run_prepared(self, inputs: dict[str, Any]) -> None:
        with self.torch.inference_mode():
            logits = self.model(**accepted_inputs(self.model.forward, inputs)).logits
            self.torch.softmax(logits.float(), dim=-1).cpu()  # .cpu() waits for the device to finish

    def fixed(self, batch: int, seq_len: int) -> dict[str, Any]:
        ids = self.torch.from_numpy(synthetic_ids(batch, seq_len, self.vocab_size)).to(self.device)
        return {"input_ids": ids, "attention_mask": self.torch.ones_like(ids)}

    def prepare_texts(self, texts: list[str]) -> dict[str, Any]:
        batch = self.tokenizer(texts, truncation=True, max_length=self.max_seq_len, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def run_texts(self, texts: list[str]) -> None:
        self.run_prepared(self.prepare_texts(texts))


Engine = RuntimeEngine | TorchEngine
