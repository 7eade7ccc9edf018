"""The try-it page in a real browser: Debian's Chromium, driven by Playwright, against a real `bentoml serve`.

Skipped with one line where no Chromium is installed (`.ci/run` installs Debian's `chromium` where apt exists).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.serving import serve_env, served
from textclf.config import Config

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
