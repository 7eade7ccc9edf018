"""Multi-label end to end on a tiny BERT: generated 3-topic data → BCE training → gated export → served label sets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import tiny_config
from tests.serving import serve_env, served
from tests.tiny import build_tiny_bert
from textclf.artifacts.manifest import require_export, require_train
from textclf.config import Config
from textclf.inference.predictions import label_sets
from textclf.inference.runtime import Classifier
from textclf.paths import CHECKPOINT_DIR, CONFUSION_MATRIX_PNG
from textclf_train.demo import FILLER, TOPIC_CUES, multi_label_rows

TOPICS = sorted(TOPIC_CUES)


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A tiny multi-label training (threshold 0.4, saved with the model), exported as fp32 (served) and
    int8-static."""
    from textclf_export.run import run as export_run
    from textclf_train.data import load_labelled_data
    from textclf_train.run import run as train_run

    root = tmp_path_factory.mktemp("multi-label")
    # Without passing mentions: the tiny model only has to learn cue words (the plumbing is under test here).
    data = root / "topics.jsonl"
    rows = multi_label_rows(400, seed=1, passing_mention_rate=0)
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    words = tuple(word for cues in TOPIC_CUES.values() for word in cues) + FILLER
    base = build_tiny_bert(root / "base", extra_words=words)
    cfg = tiny_config(
        root,
        base,
        data,
        "data.multi_label=true",
        "data.label_column=labels",
        "train.threshold=0.4",
        "train.epochs=20",  # a random 2-layer BERT needs a few more epochs for BCE over three labels
        "train.early_stopping_patience=20",
        "export.variants=[fp32, int8-static]",
        "export.serving_variant=fp32",  # served label sets are compared with PyTorch's exactly
        "export.timing_seconds=0.4",
    )
    train_run(cfg, cfg.run_dir)
    export_run(cfg, cfg.run_dir, load_data=load_labelled_data)
    return cfg


def _torch_label_sets(checkpoint: Path, texts: list[str], threshold: float) -> list[set[str]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    sets = []
    with torch.inference_mode():
        for text in texts:  # one at a time: no padding anywhere, the plainest reference
            probabilities = torch.sigmoid(model(**tokenizer(text, return_tensors="pt")).logits[0])
            sets.append({model.config.id2label[i] for i, p in enumerate(probabilities.tolist()) if p >= threshold})
    return sets


def test_training_saves_a_multi_label_checkpoint_with_its_threshold(multi_label_run: Config) -> None:
    run_dir = multi_label_run.run_dir
    config = json.loads((run_dir / CHECKPOINT_DIR / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["textclf_threshold"] == 0.4
    assert sorted(config["id2label"].values()) == TOPICS

    train = require_train(run_dir)
    assert train.problem_type == "multi_label_classification" and train.threshold == 0.4
    assert train.confusion_matrix_png is None and not (run_dir / CONFUSION_MATRIX_PNG).exists()
    test = train.metrics.test
    assert test.threshold == 0.4 and test.confusion_matrix is None
    assert test.micro_f1 is not None and 0 <= test.micro_f1 <= 1
    assert set(test.per_class) == set(TOPICS)
    assert sum(c["support"] for c in test.per_class.values()) > 0
    # The cue words make the topics easy: 20 short epochs of a random tiny BERT learn them (0.73 here).
    assert test.micro_f1 > 0.6, test


def test_export_judges_micro_f1_and_label_set_invariance(multi_label_run: Config) -> None:
    export = require_export(multi_label_run.run_dir)
    assert export.problem_type == "multi_label_classification" and export.threshold == 0.4
    assert export.gate_metric == "micro_f1"
    assert export.pytorch.test_micro_f1 == pytest.approx(require_train(multi_label_run.run_dir).metrics.test.micro_f1)
    fp32 = export.variants["fp32"]
    assert fp32.passed, fp32.reason
    assert fp32.metric_delta == pytest.approx(0, abs=1e-9) and fp32.test_micro_f1 is not None
    assert fp32.batch_invariance is not None and fp32.batch_invariance.flips == 0
    static = export.variants["int8-static"]
    assert static.metric_delta is not None and static.batch_invariance is not None
    assert static.passed or "micro-F1" in static.reason or "flips" in static.reason, static.reason
    assert export.serving_variant == "fp32"


def test_runtime_label_sets_use_the_saved_threshold(multi_label_run: Config) -> None:
    classifier = Classifier.from_run(multi_label_run.run_dir, variant="fp32")
    assert classifier.multi_label and classifier.threshold == 0.4
    texts = [str(row["text"]) for row in multi_label_rows(12, seed=5)]
    logits, truncated = classifier.logits(texts)
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
    for prediction, row in zip(classifier.predictions(logits, truncated), probabilities, strict=True):
        assert prediction.labels == [classifier.labels[i] for i in np.argsort(-row) if row[i] >= 0.4]
        assert prediction.scores == pytest.approx(dict(zip(classifier.labels, row.tolist(), strict=True)), abs=1e-6)
    raw = classifier.predictions(logits, truncated, raw_scores=True)
    assert [p.labels for p in raw] == [p.labels for p in classifier.predictions(logits, truncated)]


@pytest.fixture(scope="module")
def server(multi_label_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("bentoml-home")
    # Windows for the long-document test below: 8 tokens of overlap, room for a ~2,000-token text's ~90 windows.
    env = serve_env(multi_label_run.run_dir, home, chunk_overlap_tokens="8", max_chunks_per_text="128")
    with served("service:TextClassifier", env, home / "serve.log") as url:
        yield url


def test_served_label_sets_equal_pytorch_sigmoid_over_threshold(server: str, multi_label_run: Config) -> None:
    texts = [str(row["text"]) for row in multi_label_rows(24, seed=7)]
    texts.append("the latest news from the city today")  # no cue words at all
    response = requests.post(f"{server}/predict", json={"texts": texts}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = _torch_label_sets(multi_label_run.run_dir / CHECKPOINT_DIR, texts, 0.4)
    assert [set(item["labels"]) for item in body] == expected
    assert any(len(s) > 1 for s in expected) and len({frozenset(s) for s in expected}) > 2, expected
    for item in body:
        assert item["label"] == max(item["scores"], key=item["scores"].get)
        assert item["labels"] == sorted(item["labels"], key=lambda name: -item["scores"][name])

    model = requests.get(f"{server}/model", timeout=10).json()
    assert model["multi_label"] is True and model["threshold"] == 0.4

    top = requests.post(f"{server}/predict", json={"texts": texts[:3], "top_k": 1, "raw_scores": True}, timeout=30)
    assert top.status_code == 200, top.text
    for item, full in zip(top.json(), body[:3], strict=True):
        assert list(item["scores"]) == [full["label"]] and item["labels"] == full["labels"]
        assert (item["score"] >= 0) == (full["score"] >= 0.5)  # a logit's sign is its sigmoid's side of 0.5


def test_a_served_long_document_takes_each_labels_max_over_its_windows(server: str, multi_label_run: Config) -> None:
    from textclf.inference.predictions import sigmoid
    from textclf.inference.text_options import TextOptions

    words = " ".join(str(row["text"]) for row in multi_label_rows(400, seed=13)).split()
    document, short = " ".join(words[:2000]), str(multi_label_rows(1, seed=14)[0]["text"])
    chunk = TextOptions(on_overlength="chunk")
    classifier = Classifier.from_run(multi_label_run.run_dir, chunk_overlap_tokens=8)
    windows = classifier.windows(classifier.encode([document], chunk), chunk)
    assert windows is not None and windows.aggregation == "max" and len(windows.units) > 80
    per_window = np.concatenate([classifier.infer_encoded([unit])[0] for unit in windows.units])
    expected = per_window.max(axis=0)  # the runtime's own window logits, each window alone
    payload = {"texts": [document, short], "on_overlength": "chunk", "raw_scores": True}
    response = requests.post(f"{server}/predict", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    item, alone = response.json()
    assert item["chunks"] == len(windows.units) and "truncated" not in item and alone["chunks"] == 1
    assert item["scores"] == pytest.approx(dict(zip(classifier.labels, expected.tolist(), strict=True)), abs=1e-5)
    probabilities = sigmoid(expected[None])[0]
    assert item["labels"] == label_sets(probabilities[None], classifier.labels, 0.4)[0]
    assert not np.allclose(expected, per_window.mean(axis=0), atol=1e-3)  # max, not the mean, was taken
    (short_expected,) = classifier.predict([short])
    assert alone["labels"] == short_expected.labels


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_bulk_prediction_writes_each_rows_label_set(multi_label_run: Config, tmp_path: Path, suffix: str) -> None:
    from textclf.bulk import local as bulk

    rows = multi_label_rows(50, seed=9)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": row["text"]}) + "\n" for row in rows), encoding="utf-8")
    output = tmp_path / f"out.{suffix}"
    summary = bulk.run(multi_label_run.run_dir, source, output, text_column="text", batch_size=8)
    assert summary.predicted == 50
    if suffix == "jsonl":
        written = [json.loads(line) for line in output.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        written = pq.read_table(output).to_pylist()
    expected = Classifier.from_run(multi_label_run.run_dir).predict([str(row["text"]) for row in rows])
    assert [row["labels"] for row in written] == [p.labels for p in expected]


def test_label_sets_may_be_empty(multi_label_run: Config) -> None:
    classifier = Classifier.from_run(multi_label_run.run_dir)
    probabilities = np.array([[0.1, 0.39, 0.2], [0.9, 0.4, 0.1]], dtype=np.float32)
    assert classifier.threshold == 0.4
    sets = label_sets(probabilities, classifier.labels, classifier.threshold)
    assert sets == [[], [classifier.labels[0], classifier.labels[1]]]


@pytest.mark.slow
def test_ray_bulk_prediction_gives_the_local_label_sets(multi_label_run: Config, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from tests.integration.test_bulk_ray import assert_same, predict, read_folder, read_local

    rows = [{"id": i, "text": text} for i, text in enumerate(["sports and a match", "a vote in parliament", ""] * 20)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    local = predict(multi_label_run, "-i", source, "-o", tmp_path / "local.jsonl")
    assert local.exit_code == 0, local.output
    on_ray = predict(multi_label_run, "-i", source, "-o", tmp_path / "ray.jsonl", "--engine", "ray")
    assert on_ray.exit_code == 0, on_ray.output
    ray_rows, local_rows = read_folder(tmp_path / "ray.jsonl"), read_local(tmp_path / "local.jsonl")
    assert any(row["labels"] for row in local_rows.values())  # a real label set compared, not only empty ones
    assert_same(ray_rows, local_rows)


def test_confidence_fits_per_label_temperatures_and_thresholds_and_reports_both_macro_f1s(
    multi_label_run: Config, tmp_path: Path
) -> None:
    """The trained checkpoint exported again (outside checkpoint) on 600 texts with passing mentions: 240 validation
    texts to fit on, per-label thresholds served."""
    from textclf.errors import ConfigError
    from textclf_export.run import run as export_run
    from textclf_train.data import load_labelled_data

    data = tmp_path / "topics.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in multi_label_rows(600, seed=4)), encoding="utf-8")
    cfg = multi_label_run.model_copy(
        update={
            "artifacts_root": tmp_path / "artifacts",
            "data": multi_label_run.data.model_copy(
                update={"path": str(data), "validation_fraction": 0.4, "test_fraction": 0.2}
            ),
            "export": multi_label_run.export.model_copy(
                update={"variants": ["fp32"], "serving_variant": None, "multi_label_thresholds": "per_label"}
            ),
        }
    )
    export_run(cfg, cfg.run_dir, load_data=load_labelled_data, checkpoint=multi_label_run.run_dir / CHECKPOINT_DIR)
    export = require_export(cfg.run_dir)
    record = export.variants["fp32"].confidence
    assert export.validation_texts == 240 and record is not None and record.validation_texts == 240
    assert isinstance(record.temperature, list) and len(record.temperature) == len(TOPICS)
    assert record.thresholds is not None and len(record.thresholds) == len(TOPICS)
    assert not record.risk_coverage and not record.validation_curve  # a label set has no single confidence
    both = record.label_thresholds_f1
    assert both is not None and both.served == "per_label" and both.per_label_thresholds == record.thresholds
    assert both.fixed_threshold == 0.4 and 0 < both.macro_f1_fixed <= 1 and 0 < both.macro_f1_per_label <= 1
    # Served: each label's sigmoid of its own scaled logit, at its own threshold.
    classifier = Classifier.from_run(cfg.run_dir)
    texts = [str(row["text"]) for row in multi_label_rows(30, seed=6)]
    logits, truncated = classifier.logits(texts)
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64) / np.array(record.temperature)))
    for prediction, row in zip(classifier.predictions(logits, truncated), probabilities, strict=True):
        chosen = [i for i in np.argsort(-row) if row[i] >= record.thresholds[i]]
        assert prediction.labels == [classifier.labels[i] for i in chosen]
    with pytest.raises(ConfigError, match="multi-label model has no single confidence"):
        Classifier.from_run(cfg.run_dir, min_confidence=0.5)


def test_each_predicted_label_is_explained_with_spans_of_the_text(server: str) -> None:
    """Every label of a multi-label prediction is explained (none where the set is empty), each with spans that index
    its text. Whether the top words are the topics' cue words is measured on the demo run's real model
    (docs/measurements.md): this tiny one scores most labels near its threshold whatever the text says, so no
    explanation of it could name a cue."""
    texts = [str(row["text"]) for row in multi_label_rows(7, seed=17)]
    texts.append("the latest news from the city today")  # no cue words: possibly an empty label set
    response = requests.post(f"{server}/predict", json={"texts": texts, "explain": True}, timeout=60)
    assert response.status_code == 200, response.text
    explained = 0
    for text, item in zip(texts, response.json(), strict=True):
        assert list(item["explanation"]) == item["labels"]
        for words in item["explanation"].values():
            assert words and all(text[w["start"] : w["end"]] == w["word"] for w in words)
            explained += 1
    assert explained >= 7
