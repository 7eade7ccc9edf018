"""The pipeline's explained calls (issue 38), with a fake batcher: the perturbed texts are queued beside the texts,
the request fails whole when either part is refused (its other part leaves the queue), and observers see the texts
alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from textclf.errors import RequestError
from textclf.inference.predictions import predictions, softmax
from textclf.inference.text_options import DEFAULT_OPTIONS, OverlengthPolicy, TextOptions
from textclf.serving.batcher import Answer, QueueFull
from textclf.serving.explaining import Explaining
from textclf.serving.limits import Limits
from textclf.serving.pipeline import Pipeline
from textclf.serving.protocols.common import Call, ModelFacts

LABELS = ["neg", "pos"]


def _logits(text: str) -> list[float]:
    """A fake model: "great" pulls toward pos, nothing else counts."""
    return [0.0, 2.0 if "great" in text else -2.0]


class FakeModel:
    """Whitespace words, never cut (the plan's windows are all None)."""

    labels = LABELS

    def __init__(self) -> None:
        self.tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        self.tokenizer.normalizer = normalizers.Lowercase()
        self.tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    def policy(self, options: TextOptions) -> OverlengthPolicy:
        return options.on_overlength or "truncate"

    def encode(self, texts: list[str], options: TextOptions = DEFAULT_OPTIONS) -> list[Any]:
        return [self.tokenizer.encode(text) for text in texts]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(logits, dtype=np.float64))


class FakeBatcher:
    """Answers each submit at once with the fake model's logits; `refuse_over` texts in one submit → QueueFull."""

    def __init__(self, refuse_over: int = 10_000) -> None:
        self.refuse_over = refuse_over
        self.submitted: list[list[str]] = []
        self.cancelled = 0

    async def submit(self, texts: Sequence[str], options: TextOptions = DEFAULT_OPTIONS) -> Answer:
        self.submitted.append(list(texts))
        if len(texts) > self.refuse_over:
            raise QueueFull("full")
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        logits = np.array([_logits(t) for t in texts], dtype=np.float32).reshape(len(texts), len(LABELS))
        return Answer(logits, [False] * len(texts), tokens=[len(t.split()) for t in texts])

    @property
    def alive(self) -> bool:
        return True


def _pipeline(batcher: FakeBatcher) -> tuple[Pipeline, list[int]]:
    def score(logits: np.ndarray, truncated: list[bool], **kwargs: Any) -> Any:
        return predictions(logits, truncated, LABELS, None, **kwargs)

    pipeline = Pipeline(batcher, score, ModelFacts("m", "fp32", "", LABELS, None, 32))
    pipeline.explaining = Explaining(FakeModel(), Limits(64, 1000, 10_000, 8, max_explain_words=64))
    seen: list[int] = []
    pipeline.on_answer.append(lambda call, preds, answer: seen.append(len(preds)))
    return pipeline, seen


def test_an_explained_call_queues_its_perturbed_texts_beside_its_texts_and_observers_see_the_texts() -> None:
    batcher = FakeBatcher()
    pipeline, seen = _pipeline(batcher)
    texts = ["a great film", "so dull"]
    (great, dull) = asyncio.run(pipeline.run(Call(texts, None, explain_words=2)))
    assert batcher.submitted == [texts, [" great film", "a  film", "a great ", " dull", "so "]]
    assert seen == [2]  # one observation of the two texts, never of the five perturbed ones
    top = great.explanation["pos"][0]  # type: ignore[index]
    assert (top["word"], top["start"], top["end"]) == ("great", 2, 7)
    assert top["weight"] == pytest.approx(float(softmax(np.array([0.0, 2.0]))[1] - softmax(np.array([0.0, -2.0]))[1]))
    assert len(great.explanation["pos"]) == 2  # type: ignore[index]
    assert dull.label == "neg" and dull.explained_words == dull.total_words == 2


def test_a_refused_part_fails_the_whole_request_and_the_other_part_leaves_the_queue() -> None:
    batcher = FakeBatcher(refuse_over=3)  # the texts fit, their five perturbed copies do not
    pipeline, seen = _pipeline(batcher)
    with pytest.raises(RequestError) as refused:
        asyncio.run(pipeline.run(Call(["a great film", "so dull"], None, explain_words=2)))
    assert refused.value.status == 503 and batcher.cancelled == 1 and seen == []


def test_a_plain_call_queues_nothing_more_and_a_server_without_explaining_refuses() -> None:
    batcher = FakeBatcher()
    pipeline, _ = _pipeline(batcher)
    (plain,) = asyncio.run(pipeline.run(Call(["a great film"], None)))
    assert batcher.submitted == [["a great film"]] and plain.explanation is None
    assert "explanation" not in plain.as_dict()
    pipeline.explaining = None
    with pytest.raises(RequestError, match="does not explain"):
        asyncio.run(pipeline.run(Call(["a great film"], None, explain_words=3)))
