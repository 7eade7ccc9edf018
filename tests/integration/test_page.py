"""The try-it page in a real browser: Debian's Chromium, driven by Playwright, against a real `bentoml serve`.

Skipped with one line where no Chromium is installed (`.ci/run` installs Debian's `chromium` where apt exists).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.serving import serve_env, served
from textclf.config import Config, load_config

pytestmark = pytest.mark.browser
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
# The flags a root, offline, headless Chromium needs here: no sandbox, no background connections to the internet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "browser-test-key-0123456789"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium here: install Debian's `chromium` to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _env(cfg: Config, home: Path, **serve: str) -> dict[str, str]:
    return serve_env(cfg.run_dir, home, **serve)


@pytest.fixture(scope="module")
def server(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("page")
    with served("service:TextClassifier", _env(exported_run, home), home / "serve.log") as url:
        yield url


def test_two_texts_get_two_cards_that_match_the_api(browser: Any, server: str, tmp_path: Path) -> None:
    texts = ["a good and lovely film", "a dull and boring plot"]
    expected = requests.post(f"{server}/predict", json={"texts": texts}, timeout=30).json()
    variant = requests.get(f"{server}/model", timeout=10).json()["variant"]
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').dataset.variant !== undefined")
    assert f"variant {variant}" in page.inner_text("#model")
    page.fill("#texts", "\n".join(texts))
    page.click("#classify")
    page.wait_for_selector("#results .card >> nth=1")
    cards = page.query_selector_all("#results .card")
    assert [c.query_selector(".label").inner_text() for c in cards] == [p["label"] for p in expected]
    assert [c.query_selector(".text").inner_text() for c in cards] == texts
    assert len(cards[0].query_selector_all(".bars li")) == len(expected[0]["scores"])
    assert "classified in" in page.inner_text("#status")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 0


def test_keyboard_shortcut_and_an_empty_line_shows_the_servers_message(browser: Any, server: str) -> None:
    page = browser.new_page()
    page.goto(server + "/")
    page.fill("#texts", "a fine film\n\nanother one")
    page.press("#texts", "Control+Enter")
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert "texts[1] is empty" in message and "empty_text" in message
    assert page.query_selector_all("#results .card") == []


def test_a_text_read_in_windows_shows_how_many(browser: Any, exported_run: Config, tmp_path: Path) -> None:
    long_text = " ".join(["a good film and a fine plot"] * 40)  # ~280 tokens: windows of the tiny model's 32
    texts = [long_text, "a dull plot"]
    env = _env(exported_run, tmp_path, on_overlength="chunk")  # the page sends texts only: the server's policy
    with served("service:TextClassifier", env, tmp_path / "log") as url:
        expected = requests.post(f"{url}/predict", json={"texts": texts}, timeout=30).json()
        assert expected[0]["chunks"] > 1 and expected[1]["chunks"] == 1
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#texts", "\n".join(texts))
        page.click("#classify")
        page.wait_for_selector("#results .card >> nth=1")
        cards = page.query_selector_all("#results .card")
        assert cards[0].query_selector(".flag.chunks").inner_text() == f"{expected[0]['chunks']} windows"
        assert cards[1].query_selector(".flag.chunks") is None  # one window: nothing to say
        assert cards[0].query_selector(".flag:not(.chunks)") is None  # read whole: not flagged truncated


def test_a_key_is_asked_for_and_sent(browser: Any, exported_run: Config, tmp_path: Path) -> None:
    with served("service:TextClassifier", _env(exported_run, tmp_path, api_keys=KEY), tmp_path / "log") as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-row:not([hidden])")  # GET /model answered 401: the page asks for a key
        page.fill("#key", KEY)
        page.fill("#texts", "a good film")
        page.click("#classify")
        page.wait_for_selector("#results .card")
        assert page.query_selector("#results .card .label").inner_text() in ("neg", "pos")


def test_an_abstained_answer_is_a_greyed_card_that_says_so(browser: Any, exported_run: Config, tmp_path: Path) -> None:
    from tests.tiny import tiny_texts
    from textclf.inference.runtime import Classifier

    texts = [text for text, _ in tiny_texts(4, seed=41)]
    scores = sorted(p.score for p in Classifier.from_run(exported_run.run_dir).predict(texts))
    threshold = (scores[1] + scores[2]) / 2  # between the second and third best: two answers abstain, two do not
    env = _env(exported_run, tmp_path, min_confidence=repr(threshold))  # the deploy's: the page sends texts only
    with served("service:TextClassifier", env, tmp_path / "log") as url:
        expected = requests.post(f"{url}/predict", json={"texts": texts}, timeout=30).json()
        assert sorted(p["abstained"] for p in expected) == [False, False, True, True]
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#texts", "\n".join(texts))
        page.click("#classify")
        page.wait_for_selector("#results .card >> nth=3")
        for card, answer in zip(page.query_selector_all("#results .card"), expected, strict=True):
            flag = card.query_selector(".flag.abstained")
            assert (flag is not None and flag.inner_text() == "abstained") is answer["abstained"]
            assert card.query_selector(".label").inner_text() == answer["label"]  # the label stays
            opacity = float(card.evaluate("element => getComputedStyle(element).opacity"))
            assert (opacity < 1) is answer["abstained"]  # greyed


# The `.text` paragraph of a card as its nodes: what each holds, and for a <mark> its title, aria-label, class, tint.
NODES_JS = """quote => Array.from(quote.childNodes, node => node.nodeName === 'MARK' ? {
    text: node.textContent, mark: true, title: node.title, aria: node.getAttribute('aria-label'),
    direction: node.className, strength: node.style.getPropertyValue('--strength'),
    background: getComputedStyle(node).backgroundColor,
} : {text: node.textContent, mark: false})"""
TITLE = re.compile(r"^([+-][0-9.e-]+) (toward|against) (.+)$")


def _rgba(css: str) -> tuple[float, ...]:
    """A computed `rgb(r, g, b)` / `rgba(r, g, b, a)` as four numbers."""
    parts = [float(x) for x in re.findall(r"[\d.]+", css)]
    return (*parts[:3], parts[3] if len(parts) == 4 else 1.0)


def _submit(page: Any, texts: list[str]) -> Any:
    """Type the texts, press Classify, and return the page's /predict response (its request is `.request`)."""
    page.fill("#texts", "\n".join(texts))
    with page.expect_response("**/predict") as answered:
        page.click("#classify")
    return answered.value


def test_explained_words_are_tinted_spans_cut_from_the_original_text(browser: Any, server: str) -> None:
    # An emoji first: its one code point is two UTF-16 units, so every later offset would be off by one in JS
    # unless the page converts them. Double spaces must survive; markup must stay text. The second text is longer
    # than the tiny model's 32 tokens: explained over the words it reads.
    texts = ["😀 a good,  lovely film!", 'a <img src=x onerror="window.pwned=1"> dull plot']
    page = browser.new_page()
    page.goto(server + "/")
    assert page.is_checked("#explain")  # on by default
    answer = _submit(page, texts)
    assert answer.request.post_data_json == {"texts": texts, "explain": True}
    assert answer.status == 200, f"the server does not explain yet: {answer.text()}"
    expected = answer.json()  # what this page got: the tiny model's weights are near float noise, so not another call's
    page.wait_for_selector("#results .card >> nth=1")
    cards = page.query_selector_all("#results .card")
    for card, text, prediction in zip(cards, texts, expected, strict=True):
        label = prediction["label"]
        nodes = card.eval_on_selector(".text", NODES_JS)
        assert "".join(node["text"] for node in nodes) == text  # marks and plain parts rebuild the text exactly
        marks = [node for node in nodes if node["mark"]]
        words = sorted(prediction["explanation"][label], key=lambda word: word["start"])
        assert [mark["text"] for mark in marks] == [word["word"] for word in words]  # each at its own offsets
        strongest = max(abs(word["weight"]) for word in words)
        for mark, word in zip(marks, words, strict=True):
            weight, direction, named = TITLE.fullmatch(mark["title"]).groups()  # type: ignore[union-attr]
            precision = 5e-4 if abs(word["weight"]) >= 1e-3 else 0.0  # three decimals, or two significant digits
            assert float(weight) == pytest.approx(word["weight"], rel=0.05, abs=precision)
            assert named == label and mark["aria"] == f"{mark['text']} ({mark['title']})"
            assert mark["direction"] == direction == ("against" if word["weight"] < 0 else "toward")
            assert float(mark["strength"]) == pytest.approx(abs(word["weight"]) / strongest, abs=1e-3)
            red, green, _, alpha = _rgba(mark["background"])
            assert alpha == pytest.approx(0.6 * float(mark["strength"]), abs=0.01)  # tint by relative |weight|
            assert alpha == 0 or (green > red) is (direction == "toward")
        legend = card.query_selector(".why").inner_text()
        assert label in legend
        assert (f"over {prediction['explained_words']} of its {prediction['total_words']} words" in legend) is (
            prediction["explained_words"] < prediction["total_words"]
        )
    # The first text has fewer words than top_k_words: every word of it is explained.
    first = [node["text"] for node in cards[0].eval_on_selector(".text", NODES_JS) if node["mark"]]
    assert first == ["😀", "a", "good", ",", "lovely", "film", "!"]
    assert expected[1]["explained_words"] < expected[1]["total_words"]  # the cut text says so
    assert page.query_selector("#results img") is None and page.evaluate("window.pwned") is None


def test_explain_unchecked_sends_texts_only_and_colours_nothing(browser: Any, server: str) -> None:
    page = browser.new_page()
    page.goto(server + "/")
    page.uncheck("#explain")
    text = 'a <img src=x onerror="window.pwned=1"> good film'  # shown as typed, never parsed
    assert _submit(page, [text]).request.post_data_json == {"texts": [text]}
    page.wait_for_selector("#results .card")
    assert page.query_selector_all("#results mark, #results .why") == []
    assert page.inner_text("#results .text") == text
    assert page.query_selector("#results img") is None and page.evaluate("window.pwned") is None


def test_past_the_explain_limit_the_texts_are_classified_without(browser: Any, server: str) -> None:
    limit = load_config(None).serve.max_explain_texts  # the server's: its defaults and environment, as ours
    texts = [f"a good film number {i}" for i in range(limit + 1)]
    assert requests.post(f"{server}/predict", json={"texts": texts, "explain": True}, timeout=30).status_code == 413
    page = browser.new_page()
    page.goto(server + "/")
    page.fill("#texts", "\n".join(texts))
    page.click("#classify")
    page.wait_for_selector(f"#results .card >> nth={len(texts) - 1}")
    status = page.inner_text("#status")
    assert "without explanations" in status and "max_explain_texts" in status  # the server's own reason
    assert page.query_selector_all("#results mark") == [] and page.is_hidden("#error")


def test_a_multi_label_answer_colours_its_first_label_and_a_select_picks_another(browser: Any, server: str) -> None:
    text = "goal scored on a new laptop"
    word = {"goal": (0, 4), "scored": (5, 11), "laptop": (21, 27)}

    def weights(**by_word: float) -> list[dict[str, Any]]:
        return [{"start": word[w][0], "end": word[w][1], "word": w, "weight": v} for w, v in by_word.items()]

    # The tiny served model is single-label: the page's side of a multi-label answer is checked on a fixed one. Its
    # explanation's keys are in the other order than `labels` (best first), which decides the label shown first.
    answer = {
        "label": "sport",
        "score": 0.9,
        "scores": {"sport": 0.9, "tech": 0.7, "food": 0.1},
        "labels": ["sport", "tech"],
        "explanation": {"tech": weights(laptop=0.5, goal=-0.1), "sport": weights(goal=0.6, scored=0.3)},
        "explained_words": 6,
        "total_words": 6,
    }
    page = browser.new_page()
    page.route("**/predict", lambda route: route.fulfill(status=200, json=[answer]))
    page.goto(server + "/")
    _submit(page, [text])
    page.wait_for_selector("#results .card mark")

    def shown() -> list[tuple[str, str]]:
        nodes = page.eval_on_selector("#results .text", NODES_JS)
        assert "".join(node["text"] for node in nodes) == text
        return [(node["text"], node["title"]) for node in nodes if node["mark"]]

    assert shown() == [("goal", "+0.600 toward sport"), ("scored", "+0.300 toward sport")]
    page.select_option("#results .why select", "tech")
    assert shown() == [("goal", "-0.100 against tech"), ("laptop", "+0.500 toward tech")]
