"""Why this label: word attributions by deletion (occlusion), numpy and `tokenizers` only.

A text is split into the words its own tokenizer sees, each with character offsets into the ORIGINAL text; each
word is deleted in turn (the rest of the text kept byte-identical) and the perturbed texts are scored like any
others. A word's weight for a label is p(label) − p(label with the word deleted): positive where the word pulls
toward the label, negative where it pulls away.

Words come from the tokenizer.json's normalizer followed by its pre-tokenizer, not the pre-tokenizer alone: BERT's
normalizer puts spaces around CJK ideographs, so "日本語" is three words to the model but one to
`pre_tokenize_str` on the raw text. `PreTokenizedString` keeps the normalizer's alignments (accents stripped,
lowercased, control characters dropped), so its splits still index the original text.

The work comes in two halves so that an async caller (the service's batcher) can put the perturbed texts through its
own queue and count them there: `plan_explanations` (words and perturbed texts, before any scoring) and
`ExplainPlan.explanations` (weights from the scores); `explain` joins them for a synchronous
`score(texts) -> probabilities` (bulk prediction, measurements).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import PreTokenizedString, Tokenizer, pre_tokenizers

from textclf.inference.predictions import Prediction, over_threshold
from textclf.inference.text_options import OverlengthPolicy, TextOptions, TruncationDirection

logger = logging.getLogger(__name__)

DEFAULT_MAX_WORDS = 64  # serve.max_explain_words' default: a longer text is explained over its first 64 words
DEFAULT_TOP_K_WORDS = 10  # a request's top_k_words default

Score = Callable[[list[str]], np.ndarray]  # texts → (texts, labels) probabilities, the caller's served scores


@dataclass(frozen=True)
class Word:
    """One pre-tokenizer word: `text == original[start:end]`, offsets in characters (code points)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class WordSplit:
    """The words of one text that are explained (at most `max_words`, in text order), and how many it has."""

    words: tuple[Word, ...]
    total_words: int


@dataclass(frozen=True)
class Explanation:
    """One text's attributions: per explained label, its top words strongest first."""

    by_label: dict[str, list[dict[str, Any]]]  # label → [{"start", "end", "word", "weight"}, ...]
    explained_words: int
    total_words: int

    @property
    def is_capped(self) -> bool:
        """Whether the explanation covers only part of the text's words."""
        return self.explained_words < self.total_words

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        """The JSON shape of a prediction's `explanation`: `{label: [{start, end, word, weight}, ...]}`."""
        return self.by_label


def split_words(
    tokenizer: Tokenizer, text: str, max_words: int = DEFAULT_MAX_WORDS, window: tuple[int, int] | None = None
) -> WordSplit:
    """The tokenizer's words of `text`, with character offsets into `text` itself.

    Args:
        tokenizer: the model's `tokenizers.Tokenizer` (its normalizer and pre-tokenizer are used, nothing else; one
            without a pre-tokenizer is split on whitespace).
        text: the original text.
        max_words: explain at most this many words, the first ones.
        window: (start, end) characters of the text the model reads (`encoding_window`); words wholly outside it
            cannot move the prediction and are left out. None: the whole text.

    Raises:
        ValueError: `max_words` is not positive.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be a positive integer, got {max_words}")
    pretokenized = PreTokenizedString(text)
    normalizer = tokenizer.normalizer
    if normalizer is not None:
        pretokenized.normalize(normalizer.normalize)
    (tokenizer.pre_tokenizer or pre_tokenizers.WhitespaceSplit()).pre_tokenize(pretokenized)
    words = []
    for _, (start, end), _ in pretokenized.get_splits(offset_referential="original", offset_type="char"):
        # Byte-level and Metaspace pre-tokenizers keep the space before a word inside its split (and a run of spaces
        # as a split of its own): the word shown and deleted is the span without them.
        piece = text[start:end]
        word = piece.strip()
        if not word:
            continue
        start += len(piece) - len(piece.lstrip())
        words.append(Word(start, start + len(word), word))
    total_words = len(words)
    if window is not None:
        words = [w for w in words if w.end > window[0] and w.start < window[1]]
    return WordSplit(tuple(words[:max_words]), total_words)


def encoding_window(encoding: Any) -> tuple[int, int]:
    """The characters of its text a (possibly truncated) `tokenizers.Encoding` holds: from its first non-special
    token's start to its last one's end; (0, 0) when it holds none."""
    spans = [span for span, special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True) if not special]
    if not spans:
        return (0, 0)
    return (min(start for start, _ in spans), max(end for _, end in spans))


def without_words(text: str, words: Iterable[Word]) -> str:
    """`text` with the given (non-overlapping) words deleted, every other character kept as it was."""
    pieces, kept_from = [], 0
    for word in sorted(words, key=lambda w: w.start):
        pieces.append(text[kept_from : word.start])
        kept_from = word.end
    pieces.append(text[kept_from:])
    return "".join(pieces)


def predicted_labels(probabilities: np.ndarray, threshold: float | Sequence[float] | None) -> list[int]:
    """The label indices a row of scores predicts: its best label, or (multi-label, `threshold` set) every label at
    or over the threshold, best first (possibly none), by the same comparison as the prediction itself."""
    if threshold is None:
        return [int(np.argmax(probabilities))]
    chosen = over_threshold(probabilities, threshold)
    return [int(i) for i in np.argsort(-probabilities, kind="stable") if chosen[i]]


def chosen_labels(prediction: Prediction, labels: Sequence[str]) -> list[int]:
    """The label indices a prediction answered, the ones explained: its `labels` (multi-label, possibly none), else
    its `label`."""
    position = {label: i for i, label in enumerate(labels)}
    return [position[label] for label in (prediction.labels if prediction.labels is not None else [prediction.label])]


def word_weights(
    original: np.ndarray, perturbed: np.ndarray, words: Sequence[Word], label: int, top_k: int
) -> list[dict[str, Any]]:
    """The `top_k` words by |weight| (strongest first; ties in text order), weight = p(label) − p(label without it),
    from the text's (labels,) scores `original` and the (words, labels) scores `perturbed` of it with each word
    deleted, in `words`' order."""
    weights = float(original[label]) - np.asarray(perturbed, dtype=np.float64).reshape(len(words), -1)[:, label]
    ranked = np.argsort(-np.abs(weights), kind="stable")[:top_k]
    return [
        {"start": words[i].start, "end": words[i].end, "word": words[i].text, "weight": float(weights[i])}
        for i in ranked
    ]


@dataclass(frozen=True)
class ExplainPlan:
    """The words of each text and every perturbed text to score, text after text, word after word."""

    splits: tuple[WordSplit, ...]
    texts: list[str]

    def explanations(
        self,
        original: np.ndarray,
        perturbed: np.ndarray,
        labels: Sequence[str],
        threshold: float | Sequence[float] | None = None,
        top_k: int = DEFAULT_TOP_K_WORDS,
        chosen: Sequence[Sequence[int]] | None = None,
    ) -> list[Explanation]:
        """Each text's explanation from the scores of the texts and of `self.texts`.

        Args:
            original: (texts, labels) scores of the original texts, the ones their predictions were made from.
            perturbed: (len(self.texts), labels) scores of the perturbed texts, in order.
            labels: the label names, in score-column order.
            threshold: a multi-label model's threshold, or one per label (each label at or over it is explained);
                None for a single-label model (its best label is).
            top_k: words kept per label.
            chosen: per text, the label indices to explain, where the caller's prediction is not read from
                `original` (a long document's prediction aggregates its windows, while its first window is
                explained); None: the labels `original` predicts.

        Raises:
            ValueError: score rows that do not match the plan, or a `top_k` that is not positive.
        """
        if top_k < 1:
            raise ValueError(f"top_k_words must be a positive integer, got {top_k}")
        if len(original) != len(self.splits) or len(perturbed) != len(self.texts):
            raise ValueError(
                f"scores for {len(original)} texts and {len(perturbed)} perturbed texts; the plan has "
                f"{len(self.splits)} and {len(self.texts)}"
            )
        out, row = [], 0
        for index, (split, scores) in enumerate(zip(self.splits, original, strict=True)):
            mine = perturbed[row : row + len(split.words)]
            row += len(split.words)
            explained = chosen[index] if chosen is not None else predicted_labels(scores, threshold)
            by_label = {
                labels[label]: word_weights(scores, mine, split.words, label, top_k) if split.words else []
                for label in explained
            }
            out.append(Explanation(by_label, len(split.words), split.total_words))
        return out


def plan_explanations(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_words: int = DEFAULT_MAX_WORDS,
    windows: Sequence[tuple[int, int] | None] | None = None,
) -> ExplainPlan:
    """Split each text into its words and build the text once per word with that word deleted.

    `len(plan.texts)` is the work an explanation adds, known before any of it is queued (a caller can refuse a
    request that could never fit its queue).

    Args:
        tokenizer: the model's tokenizer.
        texts: the original texts.
        max_words: explain at most this many words of a text, the first ones.
        windows: per text, the characters the model reads (`encoding_window`), or None for the whole text.
    """
    spans = windows if windows is not None else [None] * len(texts)
    splits = tuple(split_words(tokenizer, text, max_words, span) for text, span in zip(texts, spans, strict=True))
    perturbed = [without_words(text, [word]) for text, split in zip(texts, splits, strict=True) for word in split.words]
    logger.debug("explaining %d texts with %d perturbed texts", len(texts), len(perturbed))
    return ExplainPlan(splits, perturbed)


def explain(
    texts: Sequence[str],
    score: Score,
    tokenizer: Tokenizer,
    labels: Sequence[str],
    *,
    threshold: float | Sequence[float] | None = None,
    top_k: int = DEFAULT_TOP_K_WORDS,
    max_words: int = DEFAULT_MAX_WORDS,
    windows: Sequence[tuple[int, int] | None] | None = None,
    chosen: Sequence[Sequence[int]] | None = None,
) -> list[Explanation]:
    """Explain each text's predicted label(s), scoring the texts and their perturbed copies in one `score` call.

    `score` must read every text the same way (a long text cut at the same end); its scores of the texts
    themselves are the ones the weights start from and whose labels are explained.

    Args:
        texts: the texts to explain.
        score: texts → (texts, labels) probabilities (a classifier's served scores).
        tokenizer: the model's tokenizer.
        labels: the label names, in score-column order.
        threshold: a multi-label model's threshold, or one per label; None for a single-label model.
        top_k: words kept per label.
        max_words: explain at most this many words of a text.
        windows: per text, the characters `score` reads of it (`reading_windows`); None: the whole text.
        chosen: per text, the label indices to explain (`ExplainPlan.explanations`); None: those `score` predicts.
    """
    plan = plan_explanations(tokenizer, texts, max_words, windows)
    scores = np.asarray(score([*texts, *plan.texts]))
    return plan.explanations(scores[: len(texts)], scores[len(texts) :], labels, threshold, top_k, chosen)


def reading_options(policy: OverlengthPolicy, direction: TruncationDirection) -> TextOptions:
    """How an explained text and its perturbed copies are read: cut at max_seq_len like any text, from the end the
    request keeps; a document read in windows (`chunk`) is explained over its first window, the text's beginning."""
    if policy == "chunk":
        return TextOptions("truncate", "right")
    return TextOptions("truncate", direction)


def reading_windows(encodings: Sequence[Any]) -> list[tuple[int, int] | None]:
    """Per encoding read under `reading_options`, the characters of its text the model reads: None where nothing
    was cut (every word counts), else `encoding_window` (words outside it cannot move the scores)."""
    return [encoding_window(e) if e.overflowing else None for e in encodings]
