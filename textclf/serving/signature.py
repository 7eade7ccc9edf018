"""The native route's typed contract: its optional request fields and its answer, as constrained pydantic types.

`service.py`'s `@bentoml.api predict` is typed with these, and BentoML writes them into `/docs.json` (what
schemathesis, BentoML's clients and a reader of the API see). The native adapter (`textclf.serving.protocols.native`)
checks the same rules on the decoded body and answers in the project's error shape; the limits that come from the
config (texts per request, characters per text) are typed in `service.py`, where the config is read.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from textclf.inference.text_options import OverlengthPolicy, TruncationDirection

TopK = Annotated[int | None, Field(ge=1, description="only the k best classes in `scores`, best first")]
RawScores = Annotated[bool, Field(description="logits instead of probabilities in `score` and `scores`")]
# Absent means the server's policy; null is refused (the native adapter checks it), so the schema says a string.
OnOverlength = Annotated[
    OverlengthPolicy,
    Field(
        description="texts over the model's max_seq_len tokens: `truncate` cuts them (flagged `truncated`), "
        "`error` refuses the request (422), `chunk` reads each in overlapping windows of max_seq_len tokens and "
        "aggregates their logits (`chunks` in the answer; 413 `too_many_chunks` past serve.max_chunks_per_text or "
        "serve.max_chunks_per_request windows); absent: the server's `serve.on_overlength`"
    ),
]
Direction = Annotated[
    TruncationDirection, Field(description="which end a cut text keeps: `right` its beginning, `left` its end")
]
# Absent means the deploy's threshold; null is refused (the native adapter checks it), so the schema says a number.
MinConfidence = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="this request's selective threshold: each prediction says `abstained: true` where its best "
        "class's probability is under it (label and scores stay); absent: the server's serve.min_confidence / "
        "serve.target_accuracy, if any; single-label models only (422 otherwise)",
    ),
]
Explain = Annotated[
    bool,
    Field(
        description="add each prediction's `explanation`: the words that moved its label, by deleting each in turn "
        "(one more text per word, through the same queue); at most serve.max_explain_texts texts (413 otherwise)"
    ),
]
TopKWords = Annotated[int, Field(ge=1, description="with explain: the strongest words kept per explained label")]


class Word(BaseModel):
    start: int = Field(description="the word's first character in the text (code points)")
    end: int = Field(description="one past its last: text[start:end] is the word")
    word: str
    weight: float = Field(description="p(label) minus p(label) with the word deleted: > 0 pulls toward the label")


class Prediction(BaseModel):
    label: str = Field(description="the most probable class")
    score: float = Field(description="its probability (its logit with raw_scores)")
    scores: dict[str, float] = Field(
        description="every class's probability (logit), or the top_k best, best first; multi-label: each label's "
        "own sigmoid, so they need not sum to 1"
    )
    labels: list[str] | None = Field(
        None,
        description="multi-label models only: every label whose probability is at or over the model's threshold, "
        "best first (possibly empty); top_k and raw_scores do not change it",
    )
    truncated: bool | None = Field(None, description="present (true) when the text was cut at max_seq_len tokens")
    chunks: int | None = Field(
        None,
        ge=1,
        description="on_overlength=chunk only: the windows of max_seq_len tokens the text was read in (1 for a text "
        "that fits one); its scores aggregate theirs (serve.chunk_aggregation)",
    )
    abstained: bool | None = Field(
        None,
        description="present (true or false) where a selective threshold is in force, the server's or the "
        "request's `min_confidence`: true where the best class's calibrated probability is under it",
    )
    explanation: dict[str, list[Word]] | None = Field(
        None,
        description="explain only: per predicted label (multi-label: each in `labels`), its top_k_words strongest "
        "words by |weight|, strongest first",
    )
    explained_words: int | None = Field(
        None, description="explain only: the words explained (the first serve.max_explain_words the model reads)"
    )
    total_words: int | None = Field(None, description="explain only: the words of the text")
