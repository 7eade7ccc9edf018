"""Tiny random BERT models and small labelled data sets, built inside a test's tmp_path (no network)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "superb", "lovely", "fine", "brilliant", "moving", "fun"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "weak", "messy", "flat"]
FILLER = ["the", "film", "movie", "was", "really", "quite", "a", "plot", "and", "story", "acting", "very"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_texts(n: int, seed: int = 0, labels: tuple[str, str] = ("pos", "neg")) -> list[tuple[str, str]]:
    """`n` (text, label) pairs: the label is told by which sentiment words appear; lengths vary."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        is_pos = i % 2 == 0
        cue = POSITIVE if is_pos else NEGATIVE
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 14))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
        rows.append((" ".join(words), labels[0] if is_pos else labels[1]))
    return rows


def write_csv(path: Path, rows: list[tuple[object, object]], header: tuple[str, str] = ("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_vocab(folder: Path, extra_words: tuple[str, ...] = ()) -> Path:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted(set(POSITIVE + NEGATIVE + FILLER) | set(extra_words) | set(letters))  # letters: any word tokenizes
    vocab = SPECIAL + words + [f"##{c}" for c in letters]
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def build_tiny_distilbert(folder: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """A 2-layer random DistilBERT classifier saved with a BERT fast tokenizer, which emits token_type_ids that
    DistilBERT's forward does not take."""
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab_file=str(_write_vocab(folder)), do_lower_case=True)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    config.num_labels = num_labels
    config.id2label = {i: f"class_{i}" for i in range(num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_bert(
    folder: Path, num_labels: int | None = None, seed: int = 0, extra_words: tuple[str, ...] = ()
) -> Path:
    """Save a 2-layer random BERT (+ fast tokenizer) with `save_pretrained`; a classifier head if num_labels.
    `extra_words` become whole tokens (other words are spelt out in single letters)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab_file=str(_write_vocab(folder, extra_words)), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    if num_labels is None:
        model = BertModel(config)
    else:
        config.num_labels = num_labels
        config.id2label = {i: f"class_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
