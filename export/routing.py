"""Which engine serves which call: every passing CPU variant timed across call shapes, and a route for long calls.

ONNX Runtime's int8 wins short calls and OpenVINO's int8 long ones on some CPUs (issue 20's table: ORT 1.65× faster
on single ~27-token texts, OpenVINO 1.3-1.5× from 128 tokens up). One variant serves every call unless another
is faster on the long shapes: then calls over a padded-token threshold go to it. The threshold is the one whose
route keeps the worst shape closest to the fastest variant measured for that shape ("envelope": best time ÷ the
routed time, 1.0 = always the fastest), and a route is kept only when it lifts that worst case by `MIN_GAIN`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping

import numpy as np

from textclf.runtime import Classifier
from textclf.schema import ServingRoute, ShapeTiming

logger = logging.getLogger(__name__)

BATCHES = (1, 8)
SEQ_LENS = (32, 64, 128, 256, 512)
EXTRA_SHAPES = ((32, 128),)  # the benchmarks' headline shape
MIN_GAIN = 0.03


def shapes(max_seq_len: int) -> list[tuple[int, int]]:
    grid = [(b, s) for b in BATCHES for s in SEQ_LENS if s <= max_seq_len]
    return grid + [(b, s) for b, s in EXTRA_SHAPES if s <= max_seq_len]


def _inputs(classifier: Classifier, ids: list[int], batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """A call of `batch` rows of exactly `seq_len` real tokens, cut from the texts' token ids end to end."""
    while len(ids) < batch * seq_len:
        ids = ids + ids
    rows = np.asarray(ids[: batch * seq_len], dtype=np.int64).reshape(batch, seq_len)
    columns = {"input_ids": rows, "attention_mask": np.ones_like(rows), "token_type_ids": np.zeros_like(rows)}
    return {name: columns[name] for name in classifier.input_names}


def time_shapes(classifiers: Mapping[str, Classifier], texts: list[str], seconds_per_shape: float) -> list[ShapeTiming]:
    """p50 per call of each variant at each shape; variants interleaved inside a shape (the host is noisy)."""
    any_classifier = next(iter(classifiers.values()))
    ids = [i for encoding in any_classifier.tokenizer.encode_batch(texts[:200]) for i in encoding.ids]
    timings = []
    for batch, seq_len in shapes(any_classifier.max_seq_len):
        inputs = _inputs(any_classifier, ids, batch, seq_len)
        samples: dict[str, list[float]] = {name: [] for name in classifiers}
        for classifier in classifiers.values():
            classifier.run_session(inputs)  # warm-up: the first call at a shape prepares it
        deadline = time.perf_counter() + seconds_per_shape
        while time.perf_counter() < deadline or min(len(s) for s in samples.values()) < 3:
            for name, classifier in classifiers.items():
                started = time.perf_counter()
                classifier.run_session(inputs)
                samples[name].append((time.perf_counter() - started) * 1000)
        ms = {name: round(statistics.median(values), 4) for name, values in samples.items()}
        timings.append(ShapeTiming(batch=batch, seq_len=seq_len, ms=ms))
        logger.info("b%d × %d: %s", batch, seq_len, ms)
    return timings


def envelope(timings: list[ShapeTiming], short: str, long: str | None, max_short_tokens: int) -> float:
    """min over shapes of (fastest variant's time ÷ the time of what the route runs for that shape)."""
    ratios = []
    for timing in timings:
        tokens = timing.batch * timing.seq_len
        chosen = short if long is None or tokens <= max_short_tokens else long
        ratios.append(min(timing.ms.values()) / timing.ms[chosen])
    return min(ratios)


def choose_route(timings: list[ShapeTiming], serving: str) -> ServingRoute | None:
    """The long-call route that lifts the serving variant's worst shape most, or None when none helps enough."""
    if not timings:
        return None
    alone = envelope(timings, serving, None, 0)
    thresholds = sorted({t.batch * t.seq_len for t in timings})[:-1]
    best: ServingRoute | None = None
    for variant in timings[0].ms:
        if variant == serving:
            continue
        for threshold in thresholds:
            value = envelope(timings, serving, variant, threshold)
            if best is None or value > best.envelope_min:
                best = ServingRoute(
                    variant=variant, max_short_tokens=threshold, envelope_min=value, envelope_min_unrouted=alone
                )
    if best is None or best.envelope_min < alone * (1 + MIN_GAIN):
        logger.info("no route: %s alone is within %.0f %% of the best route's worst shape", serving, MIN_GAIN * 100)
        return None
    logger.info(
        "route: calls over %d padded tokens on %s (worst shape %.2f of the fastest, %.2f unrouted)",
        best.max_short_tokens,
        best.variant,
        best.envelope_min,
        alone,
    )
    return best
