"""Explanations in the service: a request's texts again with each word deleted, through the same batcher.

`POST /predict {"texts": [...], "explain": true}` asks, per prediction, which words moved its label
(`textclf.inference.explain`: occlusion, one perturbed text per word). The perturbed texts are queued on the
worker's one batcher like any texts: they share engine calls with other clients' texts, count against
`serve.max_queued_texts` (a full queue is a 503 for the whole request, never a partial answer), and are known before
anything is queued, so a request whose work could never fit the queue is a 413. They go to the engine only: the
pipeline's observers (classifier metrics, the drift window, data collection) see the request's own texts alone.

A text is explained as the model reads it: a text cut at max_seq_len tokens over the words it keeps (from the end
the request keeps), a long document read in windows (`chunk`) over its first window, whose scores are then read
again for the weights to start from; the label explained is always the prediction's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from textclf.errors import RequestError
from textclf.inference.explain import (
    ExplainPlan,
    chosen_labels,
    plan_explanations,
    reading_options,
    reading_windows,
)
from textclf.inference.predictions import Prediction
from textclf.inference.text_options import OverlengthPolicy, TextOptions
from textclf.serving.limits import Limits

logger = logging.getLogger(__name__)


class ExplainedModel(Protocol):
    """What explaining needs of the served model (`textclf.inference.runtime.Classifier` is one)."""

    tokenizer: Any  # a `tokenizers.Tokenizer`: its normalizer and pre-tokenizer make the words
    labels: list[str]

    def policy(self, options: TextOptions) -> OverlengthPolicy: ...

    def encode(self, texts: list[str], options: TextOptions = ...) -> list[Any]: ...

    def probabilities(self, logits: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ExplainWork:
    """One request's explanation work: what is queued beside its texts, and how it is read."""

    plan: ExplainPlan
    options: TextOptions  # how the perturbed texts are tokenized (always cut, never refused nor windowed)
    base_texts: list[str]  # the texts again, read as their perturbed copies are (`chunk` only), else empty

    @property
    def texts(self) -> list[str]:
        """Every text this work queues, base texts first."""
        return [*self.base_texts, *self.plan.texts]


class Explaining:
    """This worker's explanations: plans them before queueing and turns the scores into each prediction's words."""

    def __init__(self, model: ExplainedModel, limits: Limits) -> None:
        self.model = model
        self.limits = limits

    def plan(self, texts: list[str], options: TextOptions) -> ExplainWork:
        """The perturbed texts of a request's texts, read under `options`.

        Raises:
            RequestError: (explain_too_large, 413) the texts and their perturbed copies are more than the queue
                ever holds (`serve.max_queued_texts`).
        """
        policy = self.model.policy(options)
        reading = reading_options(policy, options.truncation_direction)
        windows = reading_windows(self.model.encode(texts, reading))
        plan = plan_explanations(self.model.tokenizer, texts, self.limits.max_explain_words, windows)
        work = ExplainWork(plan, reading, list(texts) if policy == "chunk" else [])
        queued = len(texts) + len(work.texts)
        if queued > self.limits.max_queued_texts:
            raise RequestError(
                "explain_too_large",
                f"explaining these texts queues {queued} texts (each word deleted in turn); the queue holds "
                f"{self.limits.max_queued_texts} (serve.max_queued_texts): send fewer or shorter texts",
            )
        return work

    def explained(
        self,
        work: ExplainWork,
        predictions: Sequence[Prediction],
        logits: np.ndarray,
        work_logits: np.ndarray,
        top_k_words: int,
    ) -> list[Prediction]:
        """The predictions with their explanations.

        Args:
            work: the request's plan.
            predictions: its answers, one per text (their labels are the ones explained).
            logits: the logits the predictions came from (the weights start from them, unless base texts were
                read again).
            work_logits: the logits of `work.texts`, in order.
            top_k_words: words kept per explained label.
        """
        bases = len(work.base_texts)
        start = self.model.probabilities(work_logits[:bases] if bases else logits)
        perturbed = self.model.probabilities(work_logits[bases:])
        chosen = [chosen_labels(p, self.model.labels) for p in predictions]
        explanations = work.plan.explanations(start, perturbed, self.model.labels, top_k=top_k_words, chosen=chosen)
        return [
            replace(p, explanation=e.as_dict(), explained_words=e.explained_words, total_words=e.total_words)
            for p, e in zip(predictions, explanations, strict=True)
        ]
