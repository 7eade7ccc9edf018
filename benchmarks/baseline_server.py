"""The way most teams serve a classifier today: FastAPI + a transformers `pipeline` on PyTorch, one text per
request, no batching, no ONNX. The HTTP load test's baseline. Checkpoint from TEXTCLF_CHECKPOINT; texts are cut at
TEXTCLF_MAX_SEQ_LEN tokens, the export's max_seq_len, as the Bento cuts them (the pipeline alone would cut at the
tokenizer's `model_max_length`, 512 for BERTs).
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

classifier = pipeline(
    "text-classification",
    model=os.environ["TEXTCLF_CHECKPOINT"],
    device=-1,
    truncation=True,
    max_length=int(os.environ["TEXTCLF_MAX_SEQ_LEN"]),
)
app = FastAPI(title="baseline: transformers pipeline on PyTorch")


class Item(BaseModel):
    text: str


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(item: Item) -> dict[str, object]:
    result = classifier(item.text)[0]
    return {"label": result["label"], "score": float(result["score"])}
