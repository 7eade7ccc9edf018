"""The runtime on a tiny exported model: padding, sorting and order, truncation, softmax, threads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tiny import tiny_texts
from textclf.config import Config
from textclf.inference.engines import RoutedEngine, providers_for
from textclf.inference.predictions import softmax
from textclf.inference.runtime import Classifier, OverlengthError, default_intra_op_threads


@pytest.fixture(scope="module")
def classifier(exported_run: Config) -> Classifier:
    return Classifier.from_run(exported_run.run_dir, "fp32", intra_op_threads=1)


def test_softmax_is_stable_and_normalised() -> None:
    probabilities = softmax(np.array([[1000.0, 1001.0], [-5.0, 5.0]], dtype=np.float32))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert probabilities[0, 1] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-6)
    assert not np.isnan(probabilities).any()


def test_pad_pads_to_the_longest_in_given_order(classifier: Classifier) -> None:
    encodings = classifier.encode(["good", "a really very good film"])
    batch = classifier.pad(encodings)
    ids = batch.inputs["input_ids"]
    assert ids.shape == (2, len(encodings[1].ids))
    assert batch.inputs["attention_mask"].sum(axis=1).tolist() == [len(encodings[0].ids), len(encodings[1].ids)]
    assert (ids[0, len(encodings[0].ids) :] == classifier.pad_id).all()
    assert batch.tokens == len(encodings[0].ids) + len(encodings[1].ids)


def test_order_is_restored_after_sorting_by_length(classifier: Classifier) -> None:
    texts = [t for t, _ in tiny_texts(25, seed=3)]
    texts[0] = " ".join([texts[0]] * 3)  # longest first, so sorting really reorders
    one_by_one = np.stack([classifier.logits([t])[0][0] for t in texts])
    for batch_size in (None, 4, 7):
        together, _ = classifier.logits(texts, batch_size=batch_size)
        assert np.abs(together - one_by_one).max() < 1e-4, batch_size
    labels = [p.label for p in classifier.predict(texts, batch_size=4)]
    assert labels == [classifier.labels[int(row.argmax())] for row in one_by_one]


def test_truncation_at_max_seq_len_is_flagged(classifier: Classifier) -> None:
    long_text = " ".join(["good"] * 100)
    predictions = classifier.predict([long_text, "good"])
    assert [p.truncated for p in predictions] == [True, False]
    assert len(classifier.encode([long_text])[0].ids) == classifier.max_seq_len == 32


def test_overlength_error_mode(exported_run: Config) -> None:
    strict = Classifier.from_run(exported_run.run_dir, "fp32", on_overlength="error")
    with pytest.raises(OverlengthError, match=r"texts\[1\] is longer than max_seq_len=32"):
        strict.predict(["good", " ".join(["good"] * 100)])


def test_top_k_and_raw_scores(classifier: Classifier) -> None:
    texts = ["a good film", "a dull plot"]
    logits, truncated = classifier.logits(texts)
    full = classifier.predictions(logits, truncated)
    top = classifier.predictions(logits, truncated, top_k=1)
    raw = classifier.predictions(logits, truncated, raw_scores=True)
    for f, t, r, row in zip(full, top, raw, logits, strict=True):
        assert list(t.scores) == [f.label] and t.score == f.score
        assert r.scores == pytest.approx(dict(zip(classifier.labels, row.tolist(), strict=True)))
        assert r.label == f.label and r.score == pytest.approx(float(row.max()))
    assert len(classifier.predictions(logits, truncated, top_k=99)[0].scores) == len(classifier.labels)


def test_prediction_fields(classifier: Classifier) -> None:
    prediction = classifier.predict(["a good film"])[0]
    assert set(prediction.scores) == {"neg", "pos"}
    assert prediction.score == max(prediction.scores.values())
    assert classifier.predict([]) == []


def test_thread_settings(exported_run: Config) -> None:
    explicit = Classifier.from_run(exported_run.run_dir, "fp32", intra_op_threads=1, inter_op_threads=1)
    assert explicit.session.get_session_options().intra_op_num_threads == 1
    assert explicit.session.get_session_options().inter_op_num_threads == 1
    assert default_intra_op_threads(workers=1) >= default_intra_op_threads(workers=2) >= 1
    assert default_intra_op_threads(workers=10_000) == 1
    assert providers_for(use_cuda=False) == ["CPUExecutionProvider"]
    # Asking for CUDA where this onnxruntime build has none falls back to the CPU instead of failing.
    assert providers_for(use_cuda=True)[-1] == "CPUExecutionProvider"


def test_the_serving_route_runs_long_calls_on_the_other_engine(exported_run: Config, tmp_path: Path) -> None:
    import shutil

    from textclf.artifacts.manifest import read_manifest, write_manifest
    from textclf.artifacts.schema import ServingRoute

    run_dir = tmp_path / "run"
    shutil.copytree(exported_run.run_dir, run_dir)
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.export is not None
    serving = "int8-qdq-mha" if manifest.export.variants["int8-qdq-mha"].passed else "fp32"
    route = ServingRoute(variant="openvino-fp32", max_short_tokens=16, envelope_min=1.0, envelope_min_unrouted=0.8)
    export = manifest.export.model_copy(update={"serving_variant": serving, "serving_route": route})
    write_manifest(run_dir, manifest.model_copy(update={"export": export}))

    routed = Classifier.from_run(run_dir, intra_op_threads=1)
    assert isinstance(routed.engine, RoutedEngine)
    assert "openvino" in routed.engine.describe()
    alone = Classifier.from_run(run_dir, route=False, intra_op_threads=1)
    assert not isinstance(alone.engine, RoutedEngine)
    openvino = Classifier.from_run(run_dir, "openvino-fp32", intra_op_threads=1)
    short, long = "good film", " ".join(["a long and rather dull film"] * 20)
    assert len(routed.encode([long])[0].ids) > 16 >= len(routed.encode([short])[0].ids)
    np.testing.assert_array_equal(routed.logits([short])[0], alone.logits([short])[0])
    np.testing.assert_array_equal(routed.logits([long])[0], openvino.logits([long])[0])
    assert not routed.engine.long_on_repeat

    # With long_on_repeat, the third short call of one shape runs on OpenVINO, its logits those of OpenVINO alone.
    repeat = export.model_copy(update={"serving_route": route.model_copy(update={"long_on_repeat": True})})
    write_manifest(run_dir, manifest.model_copy(update={"export": repeat}))
    repeating = Classifier.from_run(run_dir, intra_op_threads=1)
    assert isinstance(repeating.engine, RoutedEngine) and repeating.engine.long_on_repeat
    answers = [repeating.logits([short])[0] for _ in range(3)]
    assert not np.array_equal(alone.logits([short])[0], openvino.logits([short])[0])  # the engines can be told apart
    np.testing.assert_array_equal(answers[0], alone.logits([short])[0])
    np.testing.assert_array_equal(answers[2], openvino.logits([short])[0])


def test_streams_run_the_calls_side_by_side_with_the_same_logits(exported_run: Config, tmp_path: Path) -> None:
    import shutil
    import threading

    from textclf.artifacts.manifest import read_manifest, write_manifest
    from textclf.artifacts.schema import ServingRoute

    run_dir = tmp_path / "run"
    shutil.copytree(exported_run.run_dir, run_dir)
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.export is not None
    route = ServingRoute(variant="openvino-fp32", max_short_tokens=40, envelope_min=1.0, envelope_min_unrouted=0.8)
    export = manifest.export.model_copy(update={"serving_variant": "fp32", "serving_route": route})
    write_manifest(run_dir, manifest.model_copy(update={"export": export}))
    texts = [t for t, _ in tiny_texts(60, seed=5)] + [" ".join(["a long and rather dull film"] * 20)] * 5

    one = Classifier.from_run(run_dir, intra_op_threads=2)
    two = Classifier.from_run(run_dir, intra_op_threads=2, streams=2)
    assert (one.stream_count, two.stream_count) == (1, 2)
    assert all(isinstance(e, RoutedEngine) and e.short.threads == 1 for e in two.engines)  # 2 threads, 1 a copy
    threads: dict[int, set[str]] = {0: set(), 1: set()}
    for index, engine in enumerate(two.engines):
        run = engine.run

        def spied(inputs: dict[str, np.ndarray], run: Any = run, index: int = index) -> np.ndarray:
            threads[index].add(threading.current_thread().name)
            return run(inputs)

        engine.run = spied  # type: ignore[method-assign]
    together, flags = two.logits(texts, batch_size=4)
    expected, expected_flags = one.logits(texts, batch_size=4)
    assert threads[0] and threads[1]  # both copies ran calls, on the pool's threads
    assert all(name.startswith("textclf-stream") for names in threads.values() for name in names)
    np.testing.assert_allclose(together, expected, atol=1e-5)
    assert flags == expected_flags and any(flags)
    with pytest.raises(ValueError, match="streams must be at least 1"):
        Classifier.from_run(run_dir, streams=0)
