"""Explanations served (issue 38) by a real `bentoml serve` of the tiny model: spans that index the original text
(short, punctuation and non-ASCII, cut and windowed long texts), weights that are the served scores' own
differences, the limits (413, 422) in each protocol's shape, and perturbed texts kept out of the classifier
metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.serving import serve_env, served
from textclf.config import Config

TOP_K_WORDS = 3
MAX_WORDS = 16  # serve.max_explain_words of this server
MAX_TEXTS = 3  # serve.max_explain_texts
MAX_QUEUED = 40  # serve.max_queued_texts: three texts of 16 explained words each could never be queued
SHORT = ["a good film", "a dull, boring plot!", "Ça déçoit… vraiment ; 日本語 et «great» acting"]
LONG = " ".join(["the plot was dull but the acting was great"] * 8)  # 72 words, over the model's 32 tokens


@pytest.fixture(scope="module")
def server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("explain-serve")
    env = serve_env(
        exported_run.run_dir,
        home,
        max_explain_words=str(MAX_WORDS),
        max_explain_texts=str(MAX_TEXTS),
        max_queued_texts=str(MAX_QUEUED),
        max_texts_per_request="8",
    )
    with served("service:TextClassifier", env, home / "serve.log") as url:
        yield url


def _explained(url: str, texts: list[str], **fields: Any) -> list[dict[str, Any]]:
    body = {"texts": texts, "explain": True, "top_k_words": TOP_K_WORDS, **fields}
    response = requests.post(f"{url}/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json())


def _check_spans(text: str, prediction: dict[str, Any], top_k_words: int = TOP_K_WORDS) -> list[dict[str, Any]]:
    """The prediction's explanation: its label's words, each indexing the text exactly, strongest first."""
    explanation = prediction["explanation"]
    assert list(explanation) == [prediction["label"]]
    words = explanation[prediction["label"]]
    assert 0 < len(words) <= top_k_words
    for word in words:
        assert text[word["start"] : word["end"]] == word["word"] and word["word"].strip() == word["word"]
    strengths = [abs(word["weight"]) for word in words]
    assert strengths == sorted(strengths, reverse=True)
    return list(words)


def test_spans_index_short_texts_with_punctuation_and_non_ascii(server: str) -> None:
    for text, prediction in zip(SHORT, _explained(server, SHORT), strict=True):
        _check_spans(text, prediction)
        assert prediction["explained_words"] == prediction["total_words"] > 0
    accented = _explained(server, [SHORT[2]], top_k_words=MAX_WORDS)[0]
    words = {w["word"] for w in accented["explanation"][accented["label"]]}
    assert {"Ça", "déçoit", "日", "本", "語"} <= words  # BERT's normalizer splits CJK ideographs into words


def test_a_word_weight_is_the_served_score_minus_the_score_without_it(server: str) -> None:
    text = SHORT[1]
    (prediction,) = _explained(server, [text])
    top = _check_spans(text, prediction)[0]
    without = text[: top["start"]] + text[top["end"] :]
    plain = requests.post(f"{server}/predict", json={"texts": [text, without]}, timeout=30).json()
    assert plain[0]["label"] == prediction["label"] and "explanation" not in plain[0]
    expected = plain[0]["scores"][prediction["label"]] - plain[1]["scores"][prediction["label"]]
    assert top["weight"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("policy", ["truncate", "chunk"])
def test_a_long_text_is_explained_over_the_words_the_model_reads_first(server: str, policy: str) -> None:
    (prediction,) = _explained(server, [LONG], on_overlength=policy, top_k_words=MAX_WORDS)
    words = _check_spans(LONG, prediction, MAX_WORDS)
    assert prediction["total_words"] == 72 and prediction["explained_words"] <= MAX_WORDS
    # The model reads 30 word pieces of the text's start: nothing past them is explained.
    assert max(word["end"] for word in words) < len(LONG) // 2
    assert ("chunks" in prediction) == (policy == "chunk")


def _error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    ("fields", "status", "error_type", "named"),
    [
        ({"explain": "yes"}, 422, "invalid_request", "explain"),
        ({"explain": True, "top_k_words": 0}, 422, "invalid_request", "top_k_words"),
        ({"explain": True, "top_k_words": None}, 422, "invalid_request", "top_k_words"),
        ({"explain": True, "texts": ["a good film"] * (MAX_TEXTS + 1)}, 413, "explain_too_large", "max_explain_texts"),
        ({"explain": True, "texts": [LONG] * MAX_TEXTS}, 413, "explain_too_large", "max_queued_texts"),
    ],
)
def test_bad_explain_requests_are_refused_naming_the_field(
    server: str, fields: dict[str, Any], status: int, error_type: str, named: str
) -> None:
    body = _error(requests.post(f"{server}/predict", json={"texts": ["a good film"], **fields}, timeout=30), status)
    assert body["error_type"] == error_type and named in body["error"]


def test_top_k_words_without_explain_is_checked_and_unused(server: str) -> None:
    response = requests.post(f"{server}/predict", json={"texts": ["a good film"], "top_k_words": 3}, timeout=30)
    assert response.status_code == 200 and "explanation" not in response.json()[0]


def test_other_protocols_refuse_explain_in_their_own_shape(server: str) -> None:
    hub_body = {"inputs": "a good film", "parameters": {"explain": True}}
    hub = _error(requests.post(f"{server}/", json=hub_body, timeout=30), 422)
    assert hub["error_type"] == "Validation" and "explain" in hub["error"]
    tei_body = {"inputs": "a good film", "explain": True}
    tei = _error(requests.post(f"{server}/predict", json=tei_body, timeout=30), 422)
    assert tei["error_type"] == "Validation" and "explain" in tei["error"]
    v2 = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a good film"]}],
        "parameters": {"explain": True},
    }
    # v2 answers every request it cannot take 400 with one field, as its other validation errors.
    body = _error(requests.post(f"{server}/v2/models/textclf/infer", json=v2, timeout=30), 400)
    assert set(body) == {"error"} and "explain" in body["error"]


def _answered_texts(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "textclf_predictions_total"
    )


def test_perturbed_texts_never_reach_the_classifier_metrics(server: str) -> None:
    before = _answered_texts(server)
    _explained(server, SHORT)
    assert _answered_texts(server) - before == len(SHORT)
