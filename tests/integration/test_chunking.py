"""Long documents in windows (`on_overlength: chunk`): the runtime's windows, and a real `bentoml serve` of them.

The tiny exported model reads 32 tokens at a time, so a ~2,000-token text is ~90 windows. The served answers are
compared with the runtime's own windows, aggregated here with numpy (mean for this single-label model).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from tests.serving import serve_env, served
from tests.tiny import tiny_texts
from textclf.config import Config
from textclf.inference.predictions import softmax
from textclf.inference.runtime import Classifier
from textclf.inference.text_options import TextOptions

OVERLAP = 8  # tokens each window repeats from the one before (the tiny model's windows hold 30 text tokens)
MAX_PER_TEXT = 120
MAX_PER_REQUEST = 150
MAX_QUEUED = 150
CHUNK = TextOptions(on_overlength="chunk")


def long_text(tokens: int, seed: int = 0) -> str:
    """Review sentences of the tiny data joined into one document of `tokens` words, one token each (~5 characters)."""
    words: list[str] = []
    for text, _ in tiny_texts(10 * tokens, seed=seed):
        words += text.split()
        if len(words) >= tokens:
            return " ".join(words[:tokens])
    raise AssertionError("not enough tiny texts")


LONG = long_text(2000)  # every word of the tiny vocabulary is one token: 2,000 tokens, ~90 windows


@pytest.fixture(scope="module")
def reference(exported_run: Config) -> Classifier:
    return Classifier.from_run(exported_run.run_dir, chunk_overlap_tokens=OVERLAP)


def _window_logits(classifier: Classifier, text: str) -> np.ndarray:
    """The runtime's own logits for each window of `text`, each window run alone (no padding at all)."""
    windows = classifier.windows(classifier.encode([text], CHUNK), CHUNK)
    assert windows is not None
    return np.concatenate([classifier.infer_encoded([unit])[0] for unit in windows.units])


def test_windows_are_model_inputs_that_cover_the_text_with_the_overlap(reference: Classifier) -> None:
    from tokenizers import Tokenizer

    whole = Tokenizer.from_str(reference.tokenizer.to_str())
    whole.no_truncation()
    text_ids = whole.encode(LONG).ids[1:-1]  # without [CLS] and [SEP]
    assert len(text_ids) == 2000
    windows = reference.windows(reference.encode([LONG], CHUNK), CHUNK)
    assert windows is not None and windows.counts == [len(windows.units)] and windows.aggregation == "mean"
    cls, sep = whole.token_to_id("[CLS]"), whole.token_to_id("[SEP]")
    covered: list[int] = []
    for index, window in enumerate(windows.units):
        assert window.ids[0] == cls and window.ids[-1] == sep  # each window is a sequence of its own
        assert len(window.ids) <= reference.max_seq_len and set(window.attention_mask) == {1}
        assert set(window.type_ids) == {0}
        body = window.ids[1:-1]
        if index:
            assert body[:OVERLAP] == covered[-OVERLAP:]  # starts with the end of the window before
            body = body[OVERLAP:]
        covered += body
    assert covered == text_ids  # every token once, in order: nothing is lost between windows
    assert len(windows.units) == 1 + -(-(2000 - 30) // (30 - OVERLAP))
    assert reference.windows(reference.encode(["a good film"], CHUNK), CHUNK).counts == [1]  # type: ignore[union-attr]
    assert reference.windows(reference.encode([LONG]), TextOptions()) is None  # truncate: no windows


def test_the_runtimes_own_prediction_of_a_document_is_the_mean_of_its_windows(reference: Classifier) -> None:
    expected = _window_logits(reference, LONG).astype(np.float64).mean(axis=0)
    logits, truncated, chunks = reference.document_logits([LONG, "a dull plot"], batch_size=8, options=CHUNK)
    assert chunks is not None and chunks[1] == 1 and truncated == [False, False]
    np.testing.assert_allclose(logits[0], expected, atol=1e-5)
    (prediction,) = reference.predict([LONG], options=CHUNK)
    assert prediction.chunks == chunks[0] and prediction.as_dict()["chunks"] == chunks[0]
    probabilities = softmax(expected[None])[0].tolist()
    assert prediction.scores == pytest.approx(dict(zip(reference.labels, probabilities, strict=True)), abs=1e-5)


@pytest.fixture(scope="module")
def server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's default stays `truncate`: every request below asks for `chunk` itself. Each engine call is
    slowed by 50 ms (the service's test-only hook) so a ~90-window document holds the queue for a second."""
    home = tmp_path_factory.mktemp("chunk-home")
    env = serve_env(
        exported_run.run_dir,
        home,
        chunk_overlap_tokens=str(OVERLAP),
        max_chunks_per_text=str(MAX_PER_TEXT),
        max_chunks_per_request=str(MAX_PER_REQUEST),
        max_queued_texts=str(MAX_QUEUED),
        debug_engine_delay_s="0.05",
    )
    with served("service:TextClassifier", env, home / "serve.log") as url:
        yield url


def _predict(url: str, payload: object) -> requests.Response:
    return requests.post(f"{url}/predict", json=payload, timeout=60)


def test_a_served_document_is_the_aggregate_of_the_runtimes_windows(server: str, reference: Classifier) -> None:
    short = "a good and lovely film"
    texts = [LONG, short, long_text(700, seed=3)]  # a long, a short and a long text: answered in their order
    response = _predict(server, {"texts": texts, "on_overlength": "chunk", "raw_scores": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body) == 3
    for text, item in zip(texts, body, strict=True):
        windows = _window_logits(reference, text)
        assert item["chunks"] == len(windows) and "truncated" not in item
        expected = dict(zip(reference.labels, windows.astype(np.float64).mean(axis=0).tolist(), strict=True))
        assert item["scores"] == pytest.approx(expected, abs=1e-5)
    assert body[0]["chunks"] > 80 and body[1]["chunks"] == 1 and body[2]["chunks"] > 20
    (alone,) = reference.predict([short])
    assert body[1]["label"] == alone.label  # a text that fits one window reads the same as under truncate

    probabilities = _predict(server, {"texts": [LONG], "on_overlength": "chunk"}).json()[0]
    mean = _window_logits(reference, LONG).astype(np.float64).mean(axis=0)
    expected_probabilities = dict(zip(reference.labels, softmax(mean[None])[0].tolist(), strict=True))
    assert probabilities["scores"] == pytest.approx(expected_probabilities, abs=1e-5)
    assert probabilities["label"] == reference.labels[int(mean.argmax())]


def test_without_the_field_the_servers_truncate_stays(server: str) -> None:
    (item,) = _predict(server, {"texts": [LONG]}).json()
    assert item["truncated"] is True and "chunks" not in item


def test_over_the_window_limits_is_a_413_naming_the_limit_and_the_server_stays_ready(server: str) -> None:
    too_long = long_text(30 + MAX_PER_TEXT * (30 - OVERLAP))  # one window over the per-text limit
    cases = [
        ([LONG, too_long], rf"texts\[1\] needs {MAX_PER_TEXT + 1} windows", f"max_chunks_per_text={MAX_PER_TEXT}"),
        ([LONG, LONG], "the request needs", f"max_chunks_per_request={MAX_PER_REQUEST}"),
    ]
    for texts, what, limit in cases:
        response = _predict(server, {"texts": texts, "on_overlength": "chunk"})
        assert response.status_code == 413, response.text
        body = response.json()
        assert set(body) == {"error", "error_type"} and body["error_type"] == "too_many_chunks"
        assert limit in body["error"]
        assert re.search(what, body["error"]), body["error"]
    assert requests.get(f"{server}/readyz", timeout=10).status_code == 200
    assert _predict(server, {"texts": [LONG], "on_overlength": "chunk"}).status_code == 200


def test_the_queue_bound_counts_a_documents_windows(server: str) -> None:
    """Two one-text requests of ~90 windows each: the second finds the first's windows queued (over 150 together)
    and is refused 503, though only two texts were ever sent."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(_predict, server, {"texts": [LONG], "on_overlength": "chunk"})
        time.sleep(0.3)  # the first is queued and its ~22 engine calls of 50 ms each have begun
        second = _predict(server, {"texts": [LONG], "on_overlength": "chunk"})
        assert first.result().status_code == 200
    assert second.status_code == 503, second.text
    assert second.json()["error_type"] == "overloaded" and "windows" in second.json()["error"]
    assert second.headers.get("Retry-After")
    assert _predict(server, {"texts": [LONG], "on_overlength": "chunk"}).status_code == 200  # room again
