"""The peer server for `textclf load`: infinity-emb's own CLI, its classifiers cutting each text at max_seq_len.

infinity-emb 0.0.78 has no max-length setting for classification. Its optimum (ONNX Runtime) classifier calls its
transformers pipeline without truncation, so a text over the model's positions fails and one over max_seq_len is
read whole; its torch classifier truncates at the tokenizer's `model_max_length` (512 for BERTs), not at the length
the model was trained and exported with. The Bento and the baseline cut at max_seq_len, so this adds
`truncation=True, max_length=TEXTCLF_MAX_SEQ_LEN` to those two pipeline calls (each otherwise as 0.0.78 makes it)
and runs infinity's CLI: the same cut for every server, nothing else changed.

Runs in the peer's venv (`make peer`), by path: it imports nothing from textclf.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from infinity_emb.cli import cli
from infinity_emb.transformer.classifier.optimum import OptimumClassifier
from infinity_emb.transformer.classifier.torch import SentenceClassifier

MAX_SEQ_LEN = int(os.environ["TEXTCLF_MAX_SEQ_LEN"])


def _optimum_encode_core(self: Any, sentences: list[str]) -> Any:
    return self._pipe(sentences, truncation=True, max_length=MAX_SEQ_LEN)


def _torch_encode_core(self: Any, features: list[str]) -> Any:
    return self._pipe(features, batch_size=256, truncation=True, padding=True, max_length=MAX_SEQ_LEN)


if __name__ == "__main__":
    OptimumClassifier.encode_core = _optimum_encode_core
    SentenceClassifier.encode_core = _torch_encode_core
    sys.exit(cli())
