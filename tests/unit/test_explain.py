"""Word attributions by deletion (`textclf.inference.explain`) and the deletion gap (`textclf_benchmarks.explain`),
on a real BERT WordPiece tokenizer built from the tiny models' vocab, with fake score functions whose answer is known.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from tokenizers.implementations import BertWordPieceTokenizer

from tests.tiny import _write_vocab, tiny_texts
from textclf.inference.explain import (
    encoding_window,
    explain,
    plan_explanations,
    split_words,
    without_words,
)
from textclf_benchmarks.explain import bootstrap_interval, deletion_gap, log_odds

SPAN_TEXTS = [
    "the film was good",
    "Café  GOOD, bad! (really?) -- yes...",
    "naïve RÉSUMÉ e\u0301le\u0301gant Ⅻ İstanbul ß",
    "日本語のテキスト good 映画",
    "great 😀👍🏽 film!!👍",
    "good good, good; good",
    "tab\tnew\nline\r\n  end ",
    "x\u200by \x00 z \ufffd w",
    "don't stop—ever",
]


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """The BERT tokenizer the tiny models ship (lowercase, accents stripped, CJK split), read back from its json."""
    folder = tmp_path_factory.mktemp("tokenizer")
    BertWordPieceTokenizer(str(_write_vocab(folder)), lowercase=True).save(str(folder / "tokenizer.json"))
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def sentiment_score(texts: list[str]) -> np.ndarray:
    """A fake (neg, pos) classifier: "great" pulls toward pos, "dull" away from it; nothing else counts."""
    logits = np.array([2.0 * words_of(t).count("great") - 1.0 * words_of(t).count("dull") for t in texts])
    pos = 1.0 / (1.0 + np.exp(-logits))
    return np.stack([1.0 - pos, pos], axis=1)


def topic_score(texts: list[str]) -> np.ndarray:
    """A fake multi-label classifier: each label is on (0.9) where its cue word appears, else off (0.1)."""
    cues = ["match", "vote", "soup"]
    return np.array([[0.9 if cue in words_of(t) else 0.1 for cue in cues] for t in texts])


@pytest.mark.parametrize("text", SPAN_TEXTS)
def test_every_span_indexes_the_original_text_and_matches_the_models_words(
    bert_tokenizer: Tokenizer, text: str
) -> None:
    split = split_words(bert_tokenizer, text)
    assert split.words and split.total_words == len(split.words)
    for word in split.words:
        assert text[word.start : word.end] == word.text
        assert word.text == word.text.strip()
    assert all(a.end <= b.start for a, b in zip(split.words, split.words[1:], strict=False))
    # The words are the model's own: one per word id of the encoding, each token inside its word's span (the
    # pre-tokenizer alone, without the normalizer, would keep "日本語" one word and fail here).
    encoding = bert_tokenizer.encode(text, add_special_tokens=False)
    assert len(set(encoding.word_ids)) == len(split.words)
    for word_id, (start, end) in zip(encoding.word_ids, encoding.offsets, strict=True):
        assert split.words[word_id].start <= start and end <= split.words[word_id].end


def test_words_of_punctuation_non_ascii_and_repeats(bert_tokenizer: Tokenizer) -> None:
    assert [w.text for w in split_words(bert_tokenizer, "Café  GOOD, bad!").words] == ["Café", "GOOD", ",", "bad", "!"]
    assert [w.text for w in split_words(bert_tokenizer, "日本語 ok").words] == ["日", "本", "語", "ok"]
    accented = split_words(bert_tokenizer, "e\u0301le\u0301gant").words
    assert [(w.start, w.end) for w in accented] == [(0, 9)]  # both combining accents kept in the span
    repeated = split_words(bert_tokenizer, "good good good").words
    assert [(w.start, w.end) for w in repeated] == [(0, 4), (5, 9), (10, 14)]
    assert split_words(bert_tokenizer, "  \t ").words == ()


def test_byte_level_words_leave_their_leading_space_out() -> None:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = "The good  film, naïve"
    assert [(w.start, w.end, w.text) for w in split_words(tokenizer, text).words] == [
        (0, 3, "The"),
        (4, 8, "good"),
        (10, 14, "film"),
        (14, 15, ","),
        (16, 21, "naïve"),
    ]


def test_a_tokenizer_without_a_pre_tokenizer_is_split_on_whitespace() -> None:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    assert [w.text for w in split_words(tokenizer, " a  b,c\td ").words] == ["a", "b,c", "d"]


def test_a_long_text_is_explained_over_its_first_words_and_says_so(bert_tokenizer: Tokenizer) -> None:
    text = " ".join(f"w{i}" if i != 70 else "great" for i in range(100))
    split = split_words(bert_tokenizer, text, max_words=64)
    assert len(split.words) == 64 and split.total_words == 100
    assert split.words[-1].text == "w63"
    plan = plan_explanations(bert_tokenizer, [text, "great film"], max_words=64)
    assert len(plan.texts) == 64 + 2
    (long, short) = explain([text, "great film"], sentiment_score, bert_tokenizer, ["neg", "pos"])
    assert long.is_capped and (long.explained_words, long.total_words) == (64, 100)
    assert all(w["weight"] == 0.0 for w in long.by_label["pos"])  # "great" (word 70) was never deleted
    assert not short.is_capped and short.by_label["pos"][0]["word"] == "great"
    with pytest.raises(ValueError, match="max_words"):
        split_words(bert_tokenizer, text, max_words=0)


def test_a_window_keeps_the_words_the_model_reads(bert_tokenizer: Tokenizer) -> None:
    text = "the film was great and then it was dull"
    truncating = Tokenizer.from_str(bert_tokenizer.to_str())
    truncating.enable_truncation(max_length=6)  # [CLS] + 4 word pieces + [SEP]
    window = encoding_window(truncating.encode(text))
    assert text[window[0] : window[1]] == "the film was great"
    split = split_words(bert_tokenizer, text, window=window)
    assert [w.text for w in split.words] == ["the", "film", "was", "great"] and split.total_words == 9
    assert encoding_window(truncating.encode("")) == (0, 0)


def test_each_perturbed_text_deletes_one_word_and_keeps_the_rest(bert_tokenizer: Tokenizer) -> None:
    text = "Café, 日本 great!!  dull\tok"
    plan = plan_explanations(bert_tokenizer, [text])
    words = plan.splits[0].words
    assert plan.texts == [text[: w.start] + text[w.end :] for w in words]
    assert (
        without_words(text, [words[3], words[0]])
        == text[: words[0].start] + text[words[0].end : words[3].start] + (text[words[3].end :])
    )
    assert without_words(text, []) == text


def test_the_word_that_drives_the_label_ranks_first_with_its_sign(bert_tokenizer: Tokenizer) -> None:
    text = "The film was dull, but GREAT acting"
    calls: list[int] = []

    def score(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return sentiment_score(texts)

    (explanation,) = explain([text], score, bert_tokenizer, ["neg", "pos"], top_k=3)
    assert calls == [1 + 8]  # the text and its 8 one-word deletions, in one call
    assert list(explanation.as_dict()) == ["pos"]
    top = explanation.as_dict()["pos"]
    assert len(top) == 3
    assert (top[0]["word"], text[top[0]["start"] : top[0]["end"]]) == ("GREAT", "GREAT")
    assert top[0]["weight"] > 0
    assert top[1]["word"] == "dull" and top[1]["weight"] < 0  # deleting it raises p(pos)
    assert top[2]["weight"] == 0.0 and top[2]["word"] == "The"  # ties keep text order
    (against,) = explain(["so dull"], sentiment_score, bert_tokenizer, ["neg", "pos"])
    assert list(against.by_label) == ["neg"] and against.by_label["neg"][0]["word"] == "dull"
    assert against.by_label["neg"][0]["weight"] > 0


def test_multi_label_explains_each_predicted_label(bert_tokenizer: Tokenizer) -> None:
    labels = ["sports", "politics", "food"]
    texts = ["the vote after the match", "nothing here"]
    with_labels, without = explain(texts, topic_score, bert_tokenizer, labels, threshold=0.5)
    assert set(with_labels.by_label) == {"sports", "politics"}
    assert with_labels.by_label["sports"][0]["word"] == "match"
    assert with_labels.by_label["politics"][0]["word"] == "vote"
    assert with_labels.by_label["politics"][0]["weight"] == pytest.approx(0.8)
    assert without.by_label == {}


def test_scores_that_do_not_fit_the_plan_are_refused(bert_tokenizer: Tokenizer) -> None:
    plan = plan_explanations(bert_tokenizer, ["great film"])
    original = sentiment_score(["great film"])
    with pytest.raises(ValueError, match="perturbed texts"):
        plan.explanations(original, sentiment_score(["great"]), ["neg", "pos"])
    with pytest.raises(ValueError, match="top_k_words"):
        plan.explanations(original, sentiment_score(plan.texts), ["neg", "pos"], top_k=0)
    (empty,) = plan_explanations(bert_tokenizer, ["  "]).explanations(original, np.zeros((0, 2)), ["neg", "pos"])
    assert empty.by_label == {"pos": []} and not empty.is_capped


def cue_score(texts: list[str]) -> np.ndarray:
    """A fake sentiment model on the tiny data's words: each cue word moves the logit by 2."""
    from tests.tiny import NEGATIVE, POSITIVE

    logits = np.array([sum(2.0 * (w in POSITIVE) - 2.0 * (w in NEGATIVE) for w in words_of(t)) for t in texts])
    pos = 1.0 / (1.0 + np.exp(-logits))
    return np.stack([1.0 - pos, pos], axis=1)


def hash_score(texts: list[str]) -> np.ndarray:
    """A fake model whose answer is noise: each distinct text gets a fixed pseudo-random p(pos)."""
    pos = np.array([0.05 + 0.9 * int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for t in texts])
    return np.stack([1.0 - pos, pos], axis=1)


def test_the_deletion_gap_is_positive_for_a_word_driven_model_and_null_for_noise(bert_tokenizer: Tokenizer) -> None:
    texts = [text for text, _ in tiny_texts(80, seed=3)]
    driven = deletion_gap(texts, cue_score, bert_tokenizer, seed=0)
    assert driven.low > 0 and driven.mean > 1.0
    assert driven.mean_top_drop > driven.mean_random_drop
    assert driven.texts + driven.skipped == 80 and driven.texts > 60
    assert deletion_gap(texts, cue_score, bert_tokenizer, seed=0) == driven  # seeded: repeats exactly
    noise = deletion_gap(texts, hash_score, bert_tokenizer, seed=0)
    assert noise.low < 0 < noise.high and abs(noise.mean) < 0.5
    with pytest.raises(ValueError, match="more than k=3 words"):
        deletion_gap(["great", "so dull"], cue_score, bert_tokenizer)


def test_log_odds_and_the_bootstrap_interval() -> None:
    assert log_odds(np.array([0.5, 0.75]))[1] == pytest.approx(np.log(3.0))
    assert np.isfinite(log_odds(np.array([0.0, 1.0]))).all()
    rng = np.random.default_rng(0)
    assert bootstrap_interval(np.full(10, 2.5), rng) == (2.5, 2.5)
    low, high = bootstrap_interval(rng.normal(1.0, 1.0, size=400), rng)
    assert 0.7 < low < 1.0 < high < 1.3
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval(np.zeros(0), rng)
