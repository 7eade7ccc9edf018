"""Why each row got its label: an `explanation` column in bulk output (`textclf predict --explain K`).

Each row's prediction is explained as the service explains one (`textclf.inference.explain`: every word deleted in
turn, weight = p(label) − p(label without the word), calibrated scores): over the words the model reads of the text
(`reading_options`: a text cut at max_seq_len tokens over the words it keeps; one read in windows over its first
window), for the prediction's own label (multi-label: each label of its `labels`). The column holds
`{label: [{start, end, word, weight}, ...]}` with the K strongest words a label; a CSV cell its JSON, a JSON-lines
row the object itself, Parquet a list of structs (`textclf.bulk.sinks.explanation_type`).

A chunk's words are split before its texts are classified, so the work an explanation adds (one more text a word)
is known up front and the progress bar can give it its share; the perturbed texts are built, tokenized and scored a
group at a time, so memory stays that of classifying a chunk however long the texts are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from textclf.bulk.sinks import Column, explanation_structs, explanation_type
from textclf.bulk.tables import CHUNK_ROWS
from textclf.errors import InputError
from textclf.inference.explain import (
    DEFAULT_MAX_WORDS,
    ExplainPlan,
    chosen_labels,
    reading_options,
    reading_windows,
    split_words,
    without_words,
)
from textclf.inference.predictions import Prediction
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import TextOptions

logger = logging.getLogger(__name__)

EXPLANATION: Final = "explanation"  # the column's name
# Texts tokenized and scored at a time while explaining (perturbed copies, and texts read again): as many encodings
# as classifying a chunk of CHUNK_ROWS rows holds, whatever the texts' lengths and words.
GROUP_TEXTS: Final = CHUNK_ROWS


@dataclass(frozen=True)
class ExplainSettings:
    """What a bulk run explains: `top_k_words` words a label, over at most `max_words` words of a text
    (`serve.max_explain_words`)."""

    top_k_words: int
    max_words: int = DEFAULT_MAX_WORDS

    def __post_init__(self) -> None:
        for name, value in (("top_k_words", self.top_k_words), ("max_words", self.max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"explain {name} must be a positive integer, not {value!r}")


def explanation_column() -> Column:
    """The column an explained run appends after the prediction columns."""
    return Column(EXPLANATION, "explanation")


class ChunkExplainer:
    """The explanations of one batch of texts: words split on creation, scored by `explanations`."""

    def __init__(
        self, classifier: Classifier, texts: Sequence[str], options: TextOptions, settings: ExplainSettings
    ) -> None:
        """Split each text into the words the model reads of it, as `options` would have it read.

        Args:
            classifier: the model the texts are (or will be) classified with.
            texts: the texts, every one non-empty.
            options: how the texts are classified (`Classifier.encode`).
            settings: words a label and words a text.
        """
        self.classifier = classifier
        self.texts = list(texts)
        self.settings = settings
        # A document read in windows is explained over its first window, whose scores differ from the document's
        # (its windows' aggregate): those are read again. A text read whole or cut is read as it was classified,
        # and its weights start from the row's own `scores`.
        self.reads_again = classifier.policy(options) == "chunk"
        self.reading = reading_options(classifier.policy(options), options.truncation_direction)
        self.encodings = classifier.encode(self.texts, self.reading) if self.texts else []
        windows = reading_windows(self.encodings)
        tokenizer = classifier.tokenizer
        self.splits = [
            split_words(tokenizer, text, settings.max_words, window)
            for text, window in zip(self.texts, windows, strict=True)
        ]

    def _work(self, index: int) -> int:
        return len(self.splits[index].words) + self.reads_again

    @property
    def texts_to_score(self) -> int:
        """The texts explaining adds to the chunk's work: one a word, and under `chunk` each text again."""
        return sum(self._work(i) for i in range(len(self.texts)))

    def explanations(
        self,
        predictions: Sequence[Prediction],
        batch_size: int,
        on_scored: Callable[[int], None] | None = None,
    ) -> list[dict[str, list[dict[str, Any]]]]:
        """Each text's explanation of its prediction, in order.

        Args:
            predictions: the texts' predictions (their labels are explained).
            batch_size: texts per engine call (sorted by token length first, as classifying sorts them).
            on_scored: told how many texts each engine call scored (the progress bar).

        Raises:
            ValueError: not one prediction a text.
        """
        if len(predictions) != len(self.texts):
            raise ValueError(f"{len(predictions)} predictions for {len(self.texts)} explained texts")
        out: list[dict[str, list[dict[str, Any]]]] = []
        for group in self._groups():
            out.extend(self._explain(group, predictions, batch_size, on_scored))
        return out

    def fill(
        self,
        added: list[dict[str, Any]],
        where: Sequence[int],
        predictions: Sequence[Prediction],
        batch_size: int,
        on_scored: Callable[[int], None] | None = None,
    ) -> None:
        """Set the `explanation` of each explained row: `added[where[i]]` is the row of text i (`explanations`)."""
        for offset, explanation in zip(where, self.explanations(predictions, batch_size, on_scored), strict=True):
            added[offset][EXPLANATION] = explanation

    def _groups(self) -> Iterator[range]:
        """Consecutive texts whose work adds up to about GROUP_TEXTS (a text's copies stay in one group)."""
        start = work = 0
        for index in range(len(self.texts)):
            work += self._work(index)
            if work >= GROUP_TEXTS:
                yield range(start, index + 1)
                start, work = index + 1, 0
        if start < len(self.texts):
            yield range(start, len(self.texts))

    def _explain(
        self,
        group: range,
        predictions: Sequence[Prediction],
        batch_size: int,
        on_scored: Callable[[int], None] | None,
    ) -> list[dict[str, list[dict[str, Any]]]]:
        classifier = self.classifier
        labels = classifier.labels
        plan = ExplainPlan(
            tuple(self.splits[i] for i in group),
            [without_words(self.texts[i], [word]) for i in group for word in self.splits[i].words],
        )
        again = [self.encodings[i] for i in group] if self.reads_again else []
        units = [*again, *(classifier.encode(plan.texts, self.reading) if plan.texts else [])]
        on_call = (lambda call: on_scored(len(call))) if on_scored is not None else None
        logits, _ = classifier.infer_encoded(units, batch_size, on_call)
        scores = classifier.probabilities(logits)
        group_predictions = [predictions[i] for i in group]
        if self.reads_again:
            start, perturbed = scores[: len(group)], scores[len(group) :]
        else:  # the row's own scores, as written beside the explanation
            start = np.array([[p.scores[label] for label in labels] for p in group_predictions], dtype=np.float64)
            perturbed = scores
        chosen = [chosen_labels(p, labels) for p in group_predictions]
        explained = plan.explanations(start, perturbed, labels, top_k=self.settings.top_k_words, chosen=chosen)
        return [explanation.as_dict() for explanation in explained]


def arrow_batch(frame: Any) -> Any:
    """A Ray Data batch (pandas, explanation column last) as an Arrow table whose explanation column has its
    Parquet type: pandas' inference would make a struct with a field per label seen in the batch."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame.drop(columns=[EXPLANATION]), preserve_index=False)
    kind = explanation_type(pa)
    values = pa.array([explanation_structs(value) for value in frame[EXPLANATION]], type=kind)
    return table.append_column(pa.field(EXPLANATION, kind), values)


@contextlib.contextmanager
def pandas_blocks(is_asked: bool) -> Iterator[None]:
    """Where asked, Ray datasets created inside keep an actor's pandas batches as pandas blocks (Ray Data's
    `batch_to_block_arrow_format` off; a dataset keeps the settings it was created under).

    For JSON-lines output while explaining: as Arrow, an explanation `{label: [...]}` becomes a struct of every label
    any row of the block explains, and Ray's JSON writer writes the labels a row does not explain as null.
    """
    if not is_asked:
        yield
        return
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.batch_to_block_arrow_format
    context.batch_to_block_arrow_format = False
    try:
        yield
    finally:
        context.batch_to_block_arrow_format = before
