"""A chunk of rows to their added columns, the same for the local and the Ray path: which columns a classifier's
output appends, which cells hold no text, and each text's prediction (and explanation) in sorted, batched engine
calls, with progress inside the chunk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import numpy as np

from textclf.bulk.explained import ChunkExplainer, ExplainSettings, explanation_column
from textclf.bulk.sinks import Column
from textclf.inference.predictions import Prediction
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import DEFAULT_OPTIONS, TextOptions

CALLS_PER_STEP: Final = 4  # ONNX calls between progress updates


class Meter(Protocol):
    """What hears a chunk's progress (`textclf.bulk.local`'s meter)."""

    def expect(self, texts: int) -> None: ...  # the chunk scores `texts` more texts than its rows
    def step(self, texts: int) -> None: ...  # `texts` of the rows were predicted
    def work(self, texts: int) -> None: ...  # `texts` more were scored (an explanation's)


def prediction_columns(
    labels: list[str], multi_label: bool = False, chunked: bool = False, abstains: bool = False
) -> list[Column]:
    """The columns appended to every row: label, score, scores (one probability a label), for a multi-label model
    labels (the label set), truncated, input_tokens (tokens the model read: after truncation, or a text's first
    window), when read in windows chunks (windows per text), with a selective threshold in force abstained (the top
    score fell under it), error."""
    return [
        Column("label", "string"),
        Column("score", "float"),
        Column("scores", "map", tuple(labels)),
        *([Column("labels", "strings")] if multi_label else []),
        Column("truncated", "bool"),
        Column("input_tokens", "int"),
        *([Column("chunks", "int")] if chunked else []),
        *([Column("abstained", "bool")] if abstains else []),
        Column("error", "string"),
    ]


def columns_of(
    classifier: Classifier, options: TextOptions = DEFAULT_OPTIONS, explain: ExplainSettings | None = None
) -> list[Column]:
    """The columns a classifier's output appends under `options`: the prediction's, and explaining `explanation`."""
    chunked = classifier.policy(options) == "chunk"
    abstains = classifier.selective_threshold is not None
    columns = prediction_columns(classifier.labels, classifier.multi_label, chunked, abstains)
    return columns + ([explanation_column()] if explain is not None else [])


def text_problem(value: Any) -> str | None:
    """Why a cell cannot be classified, or None when it holds a text."""
    if value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"text is {type(value).__name__}, not a string"
    if not value.strip():
        return "empty text"
    return None


def classify(
    classifier: Classifier,
    texts: list[str],
    batch_size: int,
    on_step: Callable[[int], None] | None = None,
    options: TextOptions = DEFAULT_OPTIONS,
) -> tuple[list[Prediction], list[int]]:
    """`Classifier.predict(texts, batch_size, options)` (sorted by token length, calls of `batch_size` texts or
    windows, input order restored), telling `on_step` how many texts each few calls finished, so a long chunk shows
    progress; and the tokens the model read of each text (after truncation; read in windows: the first window's)."""
    encodings = classifier.encode(texts, options) if texts else []
    tokens = [classifier.token_count(encoding) for encoding in encodings]
    windows = classifier.windows(encodings, options)
    units = encodings if windows is None else windows.units
    count_done = (lambda group: len(group)) if windows is None else _texts_done(windows.counts)
    reported: list[int] = []  # the positions of the calls finished since the last report

    def on_call(call: list[int]) -> None:
        assert on_step is not None
        reported.extend(call)
        if len(reported) >= batch_size * CALLS_PER_STEP:
            on_step(count_done(reported))
            reported.clear()

    # One pass over every unit: the engine copies take its calls as they free up (Classifier.infer_encoded). In
    # groups of a few calls a copy, each copy waited at a group's end for the slowest, and a core taken for a moment
    # by another process idled the other one too. 2-core AMD EPYC Zen 4, 2026-12-03, calls of 32, 2 copies: 12,288
    # test texts in chunks of 4,096, four interleaved rounds, 1.93 cores busy and 536-612 texts/s in groups of 4 calls
    # a copy, 1.96 cores and 556-626 in one pass; in a Ray actor of 2 CPUs (20,000 rows, three runs each), 1.68-1.74
    # cores busy between its start and its last batch in groups, 1.78-1.79 in one pass.
    logits, truncated = classifier.infer_encoded(units, batch_size, on_call if on_step is not None else None)
    if on_step is not None and reported:
        on_step(count_done(reported))
    if windows is None:
        return classifier.predictions(logits, truncated), tokens
    return classifier.predictions(windows.aggregate(logits), [False] * len(texts), chunks=windows.counts), tokens


def _texts_done(counts: list[int]) -> Callable[[list[int]], int]:
    """Under `chunk`: a counter of the texts whose last window a group of windows (positions) finished."""
    owner = np.repeat(np.arange(len(counts)), counts).tolist()
    left = list(counts)

    def done(group: list[int]) -> int:
        finished = 0
        for i in group:
            left[owner[i]] -= 1
            finished += left[owner[i]] == 0
        return finished

    return done


def added_columns(
    classifier: Classifier,
    values: Sequence[Any],
    names: list[str],
    batch_size: int,
    options: TextOptions = DEFAULT_OPTIONS,
    explain: ExplainSettings | None = None,
    meter: Meter | None = None,
) -> tuple[list[dict[str, Any]], list[Prediction]]:
    """Each row's added columns (`names`, from `columns_of`) for its text column's `values`, in order, and the
    predictions of the rows with text; a row without text gets its `error` alone. The local and Ray paths share it;
    `meter` (local only) hears the progress, explaining's texts included."""
    texts: list[str] = []
    where: list[int] = []
    added: list[dict[str, Any]] = []
    for offset, value in enumerate(values):
        problem = text_problem(value)
        added.append(dict.fromkeys(names) | {"error": problem})
        if problem is None:
            texts.append(value)
            where.append(offset)
    explainer = ChunkExplainer(classifier, texts, options, explain) if explain is not None else None
    if explainer is not None and meter is not None:
        meter.expect(explainer.texts_to_score)
    predictions, tokens = classify(classifier, texts, batch_size, meter.step if meter else None, options)
    for offset, prediction, count in zip(where, predictions, tokens, strict=True):
        added[offset].update(prediction.as_dict(), truncated=prediction.truncated, input_tokens=count)  # false too
    if explainer is not None:
        explainer.fill(added, where, predictions, batch_size, meter.work if meter else None)
    return added, predictions
