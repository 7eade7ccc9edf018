"""The runtime on a tiny exported model: padding, sorting and order, truncation, softmax, threads."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tiny import tiny_texts
from textclf.artifacts.manifest import read_manifest, write_manifest
from textclf.artifacts.schema import LongRoute
from textclf.config import Config
from textclf.errors import ArtifactError
from textclf.inference.engines import providers_for
from textclf.inference.predictions import softmax
from textclf.inference.runtime import Classifier, OverlengthError, default_intra_op_threads
from textclf.paths import MANIFEST_NAME, ONNX_DIR


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


def _copy_with_export(exported_run: Config, tmp_path: Path, **update: Any) -> Path:
    """A copy of the exported run whose manifest's export section has `update`."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(exported_run.run_dir, run_dir)
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.export is not None
    write_manifest(run_dir, manifest.model_copy(update={"export": manifest.export.model_copy(update=update)}))
    return run_dir


def test_the_long_route_runs_calls_past_its_threshold_on_the_other_engine(exported_run: Config, tmp_path: Path) -> None:
    route = LongRoute(variant="openvino-fp32", max_short_tokens_per_text=16)
    run_dir = _copy_with_export(exported_run, tmp_path, serving_variant="fp32", long_route=route)

    routed = Classifier.from_run(run_dir, intra_op_threads=1)
    assert [part.name for part in routed.engine.parts()] == ["onnxruntime", "openvino"]
    assert "openvino" in routed.engine.describe() and routed.providers == ["CPUExecutionProvider"]
    alone = Classifier.from_run(run_dir, route=False, intra_op_threads=1)
    assert alone.engine.parts() == (alone.engine,)
    openvino = Classifier.from_run(run_dir, "openvino-fp32", intra_op_threads=1)
    short, long = "good film", " ".join(["a long and rather dull film"] * 20)
    assert len(routed.encode([long])[0].ids) > 16 >= len(routed.encode([short])[0].ids)
    assert not np.array_equal(alone.logits([long])[0], openvino.logits([long])[0])  # the engines can be told apart
    np.testing.assert_array_equal(routed.logits([long])[0], openvino.logits([long])[0])
    # Stateless: a short call after long ones, and many short calls in a row, stay on the serving engine.
    for _ in range(3):
        np.testing.assert_array_equal(routed.logits([short])[0], alone.logits([short])[0])
    # A deploy that names a variant serves it alone.
    named = Classifier.from_run(run_dir, "fp32", intra_op_threads=1)
    assert named.engine.parts() == (named.engine,)


def test_a_run_exported_with_a_routing_plan_serves_its_variant_alone_and_says_so(
    exported_run: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The manifest as the code before one engine per machine (d5797dc) wrote it: a route by padded tokens (its
    # repeat and length rules at their defaults; tests/unit/test_schema.py reads them set), shape timings and plans.
    run_dir = _copy_with_export(exported_run, tmp_path, serving_variant="fp32")
    data = json.loads((run_dir / MANIFEST_NAME).read_text())
    old_route = {"variant": "openvino-fp32", "max_short_tokens": 16, "envelope_min": 1.0, "envelope_min_unrouted": 0.8}
    shape = {"case": "real-b1", "batch": 1, "seq_len": 12, "calls": 3, "ms": {"fp32": 1.0}, "repeat_ms": None}
    data["export"] |= {"serving_route": old_route, "shape_timings": [shape], "plans": [], "plan_timings": [shape]}
    for record in data["export"]["variants"].values():
        record |= {"samples_b1": 10, "samples_b32": 5}
        record.pop("long_ms_per_text", None)
    (run_dir / MANIFEST_NAME).write_text(json.dumps(data))

    with caplog.at_level(logging.WARNING, logger="textclf.inference.runtime"):
        served = Classifier.from_run(run_dir, intra_op_threads=1)
    said = [r.getMessage() for r in caplog.records if "older textclf" in r.getMessage()]
    assert len(said) == 1 and "long-call route (to openvino-fp32) is ignored; re-export to route long texts" in said[0]
    assert served.variant == "fp32" and served.engine.parts() == (served.engine,)
    long = " ".join(["a long and rather dull film"] * 20)
    assert served.predict([long])[0].truncated


def test_a_variant_the_run_does_not_ship_is_refused_naming_those_it_ships(exported_run: Config, tmp_path: Path) -> None:
    import shutil

    # What a Bento holds: the manifest trimmed to the shipped variants, and only their folders.
    run_dir = _copy_with_export(exported_run, tmp_path, serving_variant="fp32")
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.export is not None
    shipped = {name: manifest.export.variants[name] for name in ("fp32", "int8-qdq")}
    trimmed = manifest.export.model_copy(update={"variants": shipped})
    write_manifest(run_dir, manifest.model_copy(update={"export": trimmed}))
    for folder in (run_dir / ONNX_DIR).iterdir():
        if folder.name not in shipped:
            shutil.rmtree(folder)
    assert Classifier.from_run(run_dir, "int8-qdq").variant == "int8-qdq"
    with pytest.raises(
        ArtifactError, match=r"variant 'openvino-int8' is not shipped here \(it ships: fp32, int8-qdq\)"
    ):
        Classifier.from_run(run_dir, "openvino-int8")
    # A local run: a passing variant whose folder is gone is not served either.
    shutil.rmtree(run_dir / ONNX_DIR / "int8-qdq")
    with pytest.raises(ArtifactError, match=r"'int8-qdq' is not shipped here \(it ships: fp32\)"):
        Classifier.from_run(run_dir, "int8-qdq")


def test_streams_run_the_calls_side_by_side_with_the_same_logits(exported_run: Config, tmp_path: Path) -> None:
    import threading

    route = LongRoute(variant="openvino-fp32", max_short_tokens_per_text=30)
    run_dir = _copy_with_export(exported_run, tmp_path, serving_variant="fp32", long_route=route)
    texts = [t for t, _ in tiny_texts(60, seed=5)] + [" ".join(["a long and rather dull film"] * 20)] * 5

    one = Classifier.from_run(run_dir, intra_op_threads=2)
    two = Classifier.from_run(run_dir, intra_op_threads=2, streams=2)
    assert (one.stream_count, two.stream_count) == (1, 2)
    assert all(len(e.parts()) == 2 and e.parts()[0].threads == 1 for e in two.engines)  # 2 threads, 1 a copy
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
