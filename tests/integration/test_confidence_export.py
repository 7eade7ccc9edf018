"""Confidence wired in (issue 36): export fits each passing variant's temperature on the validation split, the runtime
applies it to every prediction (raw_scores stays raw), a selective threshold marks answers `abstained` and is resolved
at load, and bulk prediction writes an `abstained` column.

The fitted case is a real export of an over-confident model: the tiny trained checkpoint, exported as an outside
checkpoint on texts whose labels are drawn from softmax(logits / 3), so its own scores are over-confident by a
temperature of 3 that the fit must find.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from tests.conftest import tiny_config
from tests.tiny import tiny_texts, write_csv
from textclf.artifacts.confidence import ConfidenceRecord, CurvePoint
from textclf.artifacts.manifest import require_export, require_train
from textclf.config import Config, DataConfig
from textclf.errors import ArtifactError, ConfigError
from textclf.inference.confidence import threshold_for_accuracy
from textclf.inference.predictions import softmax
from textclf.inference.runtime import Classifier
from textclf.paths import CHECKPOINT_DIR, ONNX_DIR
from textclf_cli.app import app
from textclf_export.calibrate import BATCH_TEXTS
from textclf_export.confidence import MIN_VALIDATION_TEXTS, fit_temperature

TRUE_TEMPERATURE = 3.0
VARIANTS = ["fp32", "int8-dynamic"]


def predict(cfg: Config, *args: str | Path) -> Result:
    return CliRunner().invoke(app, ["predict", "--set", f"artifacts_root={cfg.artifacts_root}", *map(str, args)])


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def overconfident_run(tmp_path_factory: pytest.TempPathFactory, trained_run: Config, tiny_base: Path) -> Config:
    """The tiny trained checkpoint exported (fp32 and int8-dynamic) as an outside checkpoint on 600 texts labelled
    by sampling its own softmax at temperature 3: validation 240 texts, test 120 (different sizes on purpose)."""
    from textclf_export.reference import pytorch_logits
    from textclf_export.run import run
    from textclf_train.data import load_labelled_data

    root = tmp_path_factory.mktemp("overconfident")
    checkpoint = trained_run.run_dir / CHECKPOINT_DIR
    texts = [text for text, _ in tiny_texts(600, seed=21)]
    logits = pytorch_logits(checkpoint, texts, trained_run.train.max_seq_len)
    id2label = json.loads((checkpoint / "config.json").read_text())["id2label"]
    rng = np.random.default_rng(7)
    drawn = (rng.random(len(texts))[:, None] > softmax(logits / TRUE_TEMPERATURE).cumsum(axis=1)).sum(axis=1)
    data = write_csv(root / "drawn.csv", [(text, id2label[str(i)]) for text, i in zip(texts, drawn, strict=True)])
    cfg = tiny_config(
        root,
        tiny_base,
        data,
        "data.validation_fraction=0.4",
        "data.test_fraction=0.2",
        f"export.variants=[{','.join(VARIANTS)}]",
        "export.serving_variant=fp32",
        "export.route_long_calls=false",
        "export.timing_seconds=0.2",
        # The labels are drawn at random: the gates would judge the draw, not the export under test.
        "export.max_accuracy_drop=1",
        "export.max_invariance_flips=1000",
    )
    run(cfg, cfg.run_dir, load_data=load_labelled_data, checkpoint=checkpoint)
    return cfg


def _validation_and_test(cfg: Config, labels: list[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """The splits export read, rebuilt independently, labels as the model's class ids."""
    from textclf_train.data import load_labelled_data

    data = load_labelled_data(DataConfig.model_validate(cfg.data.model_dump()))
    out = {}
    for split in ("validation", "test"):
        rows = data.splits[split]
        ids = np.array([labels.index(data.label_names[i]) for i in rows["label"]])
        out[split] = (list(rows["text"]), ids)
    return out


def test_each_passing_variant_is_fitted_on_its_own_validation_logits(overconfident_run: Config) -> None:
    export = require_export(overconfident_run.run_dir)
    served = Classifier.from_run(overconfident_run.run_dir)
    splits = _validation_and_test(overconfident_run, served.labels)
    (val_texts, val_ids), (test_texts, test_ids) = splits["validation"], splits["test"]
    assert (len(val_texts), len(test_texts)) == (240, 120)
    assert export.validation_texts == 240 and export.test_texts == 120
    temperatures = {}
    for name in VARIANTS:
        record = export.variants[name].confidence
        assert export.variants[name].passed and record is not None and record.is_fitted, name
        assert record.validation_texts == len(val_texts) and record.test is not None and record.test.texts == 120
        # Fitted on this variant's own raw logits of the validation split (in export's batches: int8-dynamic's
        # activation scales depend on them), which the test split would not give.
        raw = Classifier.from_run(overconfident_run.run_dir, name)
        val_logits, _ = raw.logits(val_texts, batch_size=BATCH_TEXTS)
        assert record.temperature == pytest.approx(fit_temperature(val_logits, val_ids), rel=1e-4)
        test_logits, _ = raw.logits(test_texts, batch_size=BATCH_TEXTS)
        assert abs(fit_temperature(test_logits, test_ids) - fit_temperature(val_logits, val_ids)) > 1e-3
        temperatures[name] = record.temperature
        # The over-confidence the labels were drawn with is found, and scoring with it helps on test.
        assert record.temperature == pytest.approx(TRUE_TEMPERATURE, abs=0.75)
        assert record.test.nll_after < record.test.nll_before and record.test.nll_delta_ci95.high < 0
        assert record.risk_coverage and [p.threshold for p in record.risk_coverage] == [
            p.threshold for p in record.validation_curve
        ]  # chosen on validation, reported on test
        assert record.validation_curve[0].coverage == 1.0  # the lowest threshold answers every validation text
    assert temperatures["fp32"] != temperatures["int8-dynamic"]  # int8 logits are not fp32's


def test_the_runtime_scores_with_the_temperature_and_raw_scores_stay_raw(overconfident_run: Config) -> None:
    classifier = Classifier.from_run(overconfident_run.run_dir)
    record = require_export(overconfident_run.run_dir).variants["fp32"].confidence
    assert record is not None and classifier.confidence == record
    assert isinstance(record.temperature, float) and classifier.temperature == record.temperature
    texts = [text for text, _ in tiny_texts(24, seed=3)]
    logits, _ = classifier.logits(texts)
    expected = softmax(logits.astype(np.float64) / record.temperature)
    predictions = classifier.predict(texts)
    got = np.array([[p.scores[label] for label in classifier.labels] for p in predictions])
    assert np.abs(got - expected).max() < 1e-9
    assert np.abs(got - softmax(logits)).max() > 0.05  # and that is not the softmax of the raw logits
    assert np.allclose(classifier.probabilities(logits), expected)
    assert all(p.abstained is None and "abstained" not in p.as_dict() for p in predictions)
    raw = classifier.predictions(logits, [False] * len(texts), raw_scores=True)
    assert np.array_equal(np.array([[p.scores[label] for label in classifier.labels] for p in raw]), logits)
    assert [p.label for p in raw] == [p.label for p in predictions]


def test_target_accuracy_is_resolved_at_load_and_marks_abstained_answers(overconfident_run: Config) -> None:
    record = require_export(overconfident_run.run_dir).variants["fp32"].confidence
    assert record is not None
    answered = [p for p in record.validation_curve if p.accuracy is not None]
    target = float(np.median([p.accuracy for p in answered]))
    expected = threshold_for_accuracy(record.validation_curve, target)
    classifier = Classifier.from_run(overconfident_run.run_dir, target_accuracy=target)
    selective = classifier.selective_threshold
    assert selective is not None and selective.source == "target_accuracy"
    assert selective.threshold == expected.threshold and selective.validation_coverage == expected.coverage
    texts = [text for text, _ in tiny_texts(64, seed=4)]
    predictions = classifier.predict(texts)
    assert [p.abstained for p in predictions] == [p.score < expected.threshold for p in predictions]
    assert {p.abstained for p in predictions} == {True, False}
    # A call's own threshold (a request's min_confidence) replaces the deploy's for that call.
    logits, truncated = classifier.logits(texts)
    assert not any(p.abstained for p in classifier.predictions(logits, truncated, min_confidence=0.0))
    best = max(answered, key=lambda p: p.threshold)
    if best.accuracy is not None and best.accuracy < 1.0:  # a target past the best reachable is refused
        with pytest.raises(ConfigError, match=f"best reachable is {best.accuracy:.4f}"):
            Classifier.from_run(overconfident_run.run_dir, target_accuracy=1.0)


def test_bulk_writes_an_abstained_column_locally(overconfident_run: Config, tmp_path: Path) -> None:
    texts = [text for text, _ in tiny_texts(50, seed=9)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    result = predict(overconfident_run, "-i", source, "-o", tmp_path / "plain.jsonl")
    assert result.exit_code == 0, result.output
    assert "abstained" not in read_jsonl(tmp_path / "plain.jsonl")[0] and " abstained, " not in result.output
    scores = [float(str(row["score"])) for row in read_jsonl(tmp_path / "plain.jsonl")]
    threshold = float(np.median(scores))
    result = predict(overconfident_run, "-i", source, "-o", tmp_path / "out.jsonl", "--min-confidence", threshold)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["abstained"] for row in rows] == [score < threshold for score in scores]
    assert f"{sum(bool(row['abstained']) for row in rows)} abstained" in result.output
    # The config keys work as the flags do; a flag replaces them, so a flag beside a configured target is no clash.
    record = require_export(overconfident_run.run_dir).variants["fp32"].confidence
    assert record is not None
    lowest = threshold_for_accuracy(record.validation_curve, 0.01).threshold
    target = ("--set", "serve.target_accuracy=0.01")
    result = predict(overconfident_run, "-i", source, "-o", tmp_path / "cfg.jsonl", *target)
    assert result.exit_code == 0, result.output
    assert [row["abstained"] for row in read_jsonl(tmp_path / "cfg.jsonl")] == [s < lowest for s in scores]
    result = predict(overconfident_run, "-i", source, "-o", tmp_path / "f.jsonl", *target, "--min-confidence", 1)
    assert result.exit_code == 0, result.output
    assert all(row["abstained"] is True for row in read_jsonl(tmp_path / "f.jsonl"))
    both = ("--min-confidence", "0.5", "--target-accuracy", "0.9")
    result = predict(overconfident_run, "-i", source, "-o", tmp_path / "both.jsonl", *both)
    assert result.exit_code == 2 and "both set" in result.output
    assert not (tmp_path / "both.jsonl").exists()


# -- the shared tiny run: too few validation texts ---------------------------------------------------------------
def test_too_few_validation_texts_skip_every_variant_with_the_reason(
    exported_run: Config, caplog: pytest.LogCaptureFixture
) -> None:
    export = require_export(exported_run.run_dir)
    validation_rows = require_train(exported_run.run_dir).data.splits["validation"].rows
    assert validation_rows < MIN_VALIDATION_TEXTS and export.validation_texts == validation_rows
    for name, record in export.variants.items():
        if not record.passed:
            assert record.confidence is None, name
            continue
        assert record.confidence is not None and not record.confidence.is_fitted, name
        assert record.confidence.validation_texts == validation_rows
        assert record.confidence.skipped_reason == (
            f"{validation_rows} validation texts, fewer than the {MIN_VALIDATION_TEXTS} a temperature is fitted on"
        )
    with caplog.at_level(logging.WARNING, logger="textclf.inference.confidence"):
        classifier = Classifier.from_run(exported_run.run_dir)
    said = [r.getMessage() for r in caplog.records if "confidence skipped at export" in r.getMessage()]
    assert len(said) == 1 and "serving raw scores" in said[0]
    logits, truncated = classifier.logits(["a really good film", "dull"])
    scores = [[p.scores[label] for label in classifier.labels] for p in classifier.predictions(logits, truncated)]
    assert np.array_equal(np.array(scores), softmax(logits))
    with pytest.raises(ConfigError, match=rf"fitted confidence \(skipped: {validation_rows} validation texts"):
        Classifier.from_run(exported_run.run_dir, target_accuracy=0.9)
    abstaining = Classifier.from_run(exported_run.run_dir, min_confidence=0.6)  # a fixed threshold needs no fit
    assert [p.abstained for p in abstaining.predict(["a really good film"])] in ([True], [False])


def _variant_copy(exported_run: Config, tmp_path: Path, *, multi_label: bool) -> Path:
    folder = shutil.copytree(exported_run.run_dir / ONNX_DIR / "fp32", tmp_path / "fp32")
    if multi_label:  # the same graph read as two independent labels (sigmoid each, threshold 0.5)
        config = json.loads((folder / "config.json").read_text())
        config |= {"problem_type": "multi_label_classification", "textclf_threshold": 0.5}
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_an_unreachable_target_is_refused_at_load_naming_the_best(exported_run: Config, tmp_path: Path) -> None:
    curve = [CurvePoint(threshold=t, coverage=c, accuracy=a) for t, c, a in ((0.5, 1, 0.8), (0.9, 0.3, 0.91))]
    record = ConfidenceRecord(temperature=1.5, validation_texts=100, validation_curve=curve)
    folder = _variant_copy(exported_run, tmp_path, multi_label=False)
    with pytest.raises(ConfigError, match=r"best reachable is 0\.9100 \(threshold 0\.9000, coverage 0\.300\)"):
        Classifier(folder, confidence=record, target_accuracy=0.95)
    selective = Classifier(folder, confidence=record, target_accuracy=0.9).selective_threshold
    assert selective is not None and selective.threshold == 0.9 and selective.validation_accuracy == 0.91
    with pytest.raises(ArtifactError, match="does not fit the model"):
        Classifier(folder, confidence=record.model_copy(update={"temperature": [1.0, 2.0]}))


def test_multi_label_applies_per_label_temperatures_and_thresholds_and_refuses_abstention(
    exported_run: Config, tmp_path: Path
) -> None:
    folder = _variant_copy(exported_run, tmp_path, multi_label=True)
    record = ConfidenceRecord(temperature=[2.0, 0.5], thresholds=[0.3, 0.9], validation_texts=100)
    classifier = Classifier(folder, confidence=record)
    texts = [text for text, _ in tiny_texts(40, seed=8)]
    logits, truncated = classifier.logits(texts)
    probabilities = 1 / (1 + np.exp(-logits.astype(np.float64) / np.array([2.0, 0.5])))
    for prediction, row in zip(classifier.predictions(logits, truncated), probabilities, strict=True):
        assert [prediction.scores[label] for label in classifier.labels] == pytest.approx(row.tolist(), abs=1e-6)
        chosen = {label for label, p, t in zip(classifier.labels, row, (0.3, 0.9), strict=True) if p >= t}
        assert set(prediction.labels or []) == chosen
    for setting in ({"min_confidence": 0.5}, {"target_accuracy": 0.9}):
        with pytest.raises(ConfigError, match="multi-label model has no single confidence"):
            Classifier(folder, confidence=record, **setting)
