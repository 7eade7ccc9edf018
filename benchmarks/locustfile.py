"""Closed-loop locust users posting one text per request, as an HTTP client of a classifier.

Environment:
    TEXTCLF_LOAD_TEXTS: a JSON file with a list of texts to draw from, shuffled (seeded).
    TEXTCLF_LOAD_API: request shape: `textclf` (POST /predict {"texts": [t]}), `baseline`
        (POST /predict {"text": t}), `infinity` (POST /classify {"input": [t], "model": NAME}), and the Bento's
        other protocols: `v2` (POST /v2/models/NAME/infer, one BYTES input, JSON) and `hf` (POST / {"inputs": t}).
    TEXTCLF_LOAD_MODEL: the model name for the infinity shape.
    TEXTCLF_LOAD_TIMES: where to write every request's exact response time (ms, one per line) when locust
        quits; locust's own percentiles are rounded to whole milliseconds, too coarse for a 3 ms p50.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from typing import Any

from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser

_texts = json.loads(Path(os.environ["TEXTCLF_LOAD_TEXTS"]).read_text())
random.Random(0).shuffle(_texts)
TEXTS = itertools.cycle(_texts)
TIMES_FILE = os.environ.get("TEXTCLF_LOAD_TIMES")
_times_ms: list[float] = []


@events.request.add_listener
def _record_time(response_time: float, exception: BaseException | None, **_: Any) -> None:
    if exception is None:
        _times_ms.append(response_time)


@events.quitting.add_listener
def _write_times(**_: Any) -> None:
    if TIMES_FILE:
        Path(TIMES_FILE).write_text("".join(f"{t:.3f}\n" for t in _times_ms))


API = os.environ.get("TEXTCLF_LOAD_API", "textclf")
MODEL = os.environ.get("TEXTCLF_LOAD_MODEL", "textclf")


def request_for(text: str) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) of one single-text request in the configured API's shape."""
    if API == "baseline":
        return "/predict", {"text": text}
    if API == "infinity":
        return "/classify", {"input": [text], "model": MODEL}
    if API == "v2":
        tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}
        return f"/v2/models/{MODEL}/infer", {"inputs": [tensor]}
    if API == "hf":
        return "/", {"inputs": text}
    return "/predict", {"texts": [text]}


class SingleTextUser(FastHttpUser):
    wait_time = constant(0)  # closed loop: the next request leaves when the last answer arrives

    @task
    def classify(self) -> None:
        path, body = request_for(next(TEXTS))
        with self.client.post(path, json=body, name=path, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
