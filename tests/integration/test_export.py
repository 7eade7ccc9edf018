"""Export on a tiny random BERT: every variant runs in onnxruntime, gates are recorded, refusals leave nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.artifacts import validate_against_schema
from tests.tiny import build_tiny_bert, build_tiny_distilbert, tiny_texts, write_csv
from textclf.artifacts.manifest import Manifest, read_manifest, require_export, require_train
from textclf.config import Config
from textclf.errors import ArtifactError
from textclf.inference.engines import OpenVinoEngine, OrtEngine
from textclf.inference.folders import IDENTITY_FILES
from textclf.inference.runtime import Classifier
from textclf.inference.variants import variant_spec, variants_on
from textclf.paths import EVAL_TEXTS, MANIFEST_NAME, ONNX_DIR
from textclf_cli.app import app


def _copy_run(cfg: Config, dest: Path, **export_updates: object) -> Config:
    # The shared exported run pins its serving variant (conftest); a copy with other variants chooses its own.
    export_updates = {"serving_variant": None} | export_updates
    shutil.copytree(cfg.artifacts_root, dest / "artifacts")
    return cfg.model_copy(
        update={"artifacts_root": dest / "artifacts", "export": cfg.export.model_copy(update=export_updates)}
    )


def test_every_cpu_variant_exports_runs_and_is_recorded(exported_run: Config) -> None:
    export = require_export(exported_run.run_dir)
    assert list(export.variants) == list(variants_on("cpu"))  # every builder, not only the default list
    texts = ["a really good film", "the plot was dull and the acting weak"]
    for name, record in export.variants.items():
        if variant_spec(name).must_beat_fp32 and not record.passed:  # slower than fp32 here: refused, no folder
            assert "no faster than fp32 on this CPU" in record.reason and not record.files, record.reason
            assert not (exported_run.run_dir / ONNX_DIR / name).exists()
            continue
        assert record.passed, (name, record.reason)
        assert record.parity_max_abs_diff is not None and record.test_accuracy is not None
        assert record.accuracy_delta is not None and record.files
        assert record.latency_ms and record.batch32_ms_per_text and record.long_ms_per_text
        assert record.batch_invariance is not None and record.batch_invariance.flips == 0
        assert record.bytes == sum(f.bytes for f in record.files.values())
        assert all(len(f.sha256) == 64 for f in record.files.values())
        classifier = Classifier.from_run(exported_run.run_dir, name)
        assert classifier.model_sha256 == record.files[IDENTITY_FILES[variant_spec(name).engine]].sha256
        predictions = classifier.predict(texts)
        assert [p.label in ("neg", "pos") for p in predictions] == [True, True]
        assert all(abs(sum(p.scores.values()) - 1) < 1e-5 for p in predictions)
    fp32_diff = export.variants["fp32"].parity_max_abs_diff
    optimized_diff = export.variants["optimized"].parity_max_abs_diff
    assert fp32_diff is not None and fp32_diff <= 1e-4
    assert optimized_diff is not None and optimized_diff <= 1e-3
    assert export.serving_variant in variants_on("cpu")
    assert export.pytorch.test_accuracy == require_train(exported_run.run_dir).metrics.test.accuracy
    assert export.machine.cores >= 1
    # int8 variants really are quantized: smaller weights than fp32 for the same graph.
    fp32_bytes = export.variants["fp32"].files["model.onnx"].bytes
    for name in ("int8-dynamic", "int8-qdq"):
        assert export.variants[name].files["model.onnx"].bytes < fp32_bytes, name
    ov_fp32, ov_int8 = (export.variants[name].files["model.bin"].bytes for name in ("openvino-fp32", "openvino-int8"))
    assert ov_int8 < ov_fp32


def test_session_tuning_is_recorded_and_applied(exported_run: Config) -> None:
    import onnx

    export = require_export(exported_run.run_dir)
    for name, record in export.variants.items():
        if not record.passed:
            continue
        tuning = record.params["session_tuning"]
        assert all(t["b1_ms"] > 0 and t["b32_ms"] > 0 for t in tuning["timings"].values())
        classifier = Classifier.from_run(exported_run.run_dir, name)
        if variant_spec(name).engine == "openvino":
            assert set(tuning["timings"]) == {
                "openvino_length_step=1",
                "openvino_length_step=16",
                "openvino_length_step=32",
            }
            assert isinstance(classifier.engine, OpenVinoEngine)
            assert classifier.engine.length_step == tuning["chosen"]["openvino_length_step"], name
            continue
        assert set(tuning["timings"]) == {"default", "off: SkipLayerNormFusion"}, name
        assert isinstance(classifier.engine, OrtEngine)
        assert classifier.engine.disabled_optimizers == tuning["disabled_optimizers"], name
    # int8-qdq: every MatMul reads dequantized int8 inputs and none of their outputs is quantized again.
    graph = onnx.load(str(exported_run.run_dir / ONNX_DIR / "int8-qdq" / "model.onnx")).graph
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    assert matmuls and all(produced_by.get(i) == "DequantizeLinear" for m in matmuls for i in m.input)
    consumers = {i: node.op_type for node in graph.node for i in node.input}
    assert not any(consumers.get(m.output[0]) == "QuantizeLinear" for m in matmuls)
    # The projections' biases are folded into MatMulIntegerToFloat (export.fusions): no separate Add pass.
    folded = [node for node in graph.node if node.op_type == "MatMulIntegerToFloat"]
    assert folded and all(len(node.input) == 7 for node in folded)
    assert export.variants["int8-qdq"].params["biases_folded"] == len(folded)


def test_int8_qdq_graphs_read_floats_and_fuse_attention(exported_run: Config) -> None:
    import onnx

    export = require_export(exported_run.run_dir)
    for name in ("int8-qdq", "int8-qdq-mha"):
        record = export.variants[name]
        graph = onnx.load(str(exported_run.run_dir / ONNX_DIR / name / "model.onnx")).graph
        produced_by = {output: node.op_type for node in graph.node for output in node.output}
        # Only the int8 MatMuls read dequantized tensors; the residual Adds read the float originals.
        readers = {node.op_type for node in graph.node for i in node.input if produced_by.get(i) == "DequantizeLinear"}
        assert readers <= {"MatMul"}, (name, readers)
        assert record.params["float_reads"] > 0, name
        attention = [node for node in graph.node if node.op_type == "MultiHeadAttention"]
        if name == "int8-qdq":
            assert not attention and record.params["attention"] == "int8 MatMuls"
            continue
        # One fused fp32 attention per layer; the projections around it stay int8.
        layers = json.loads((exported_run.run_dir / ONNX_DIR / name / "config.json").read_text())["num_hidden_layers"]
        assert len(attention) == layers == record.params["attention_fused"]
        assert not any(node.op_type == "Softmax" for node in graph.node)
        assert all(produced_by.get(node.input[0]) == "MatMul" for node in attention)


@pytest.mark.parametrize("builder", ["build_int8_qdq", "build_int8_static"])
@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_takes_unpadded_texts_of_mixed_lengths(
    tmp_path: Path, exported_run: Config, method: str, builder: str
) -> None:
    from textclf_export import builders

    texts = [text for text, _ in tiny_texts(12, seed=5)]
    assert len({len(text.split()) for text in texts}) > 1, "the texts must differ in length"
    cfg = exported_run.export.model_copy(update={"calibration_method": method})
    fp32 = exported_run.run_dir / ONNX_DIR / "fp32"
    source = builders.BuildSource(fp32, tmp_path, texts, 32, cfg)
    settings = {"operators": ["MatMul"]} if builder == "build_int8_static" else {}
    params = getattr(builders, builder)(source, tmp_path / "int8", per_channel=True, **settings)
    assert params["calibration_method"] == method and params["calibration_samples"] == len(texts)
    shutil.copy(fp32 / "textclf.json", tmp_path / "int8")
    logits, _ = Classifier(tmp_path / "int8").logits(texts)
    reference, _ = Classifier(fp32).logits(texts)
    assert logits.shape == reference.shape and np.isfinite(logits).all()
    assert float(np.abs(logits - reference).max()) < 1.0, "int8 strays far from fp32"


def test_manifest_matches_its_schema_and_round_trips(exported_run: Config) -> None:
    text = (exported_run.run_dir / MANIFEST_NAME).read_text()
    manifest = Manifest.model_validate_json(text)
    assert manifest.to_json() == text, "reading and writing the manifest must not change it"
    validate_against_schema(json.loads(text), "manifest.schema.json")


def test_fp32_matches_pytorch_logits(exported_run: Config) -> None:
    from textclf.paths import CHECKPOINT_DIR
    from textclf_export.reference import pytorch_logits

    texts = [t for t, _ in tiny_texts(20, seed=5)]
    expected = pytorch_logits(exported_run.run_dir / CHECKPOINT_DIR, texts, 32)
    logits, _ = Classifier.from_run(exported_run.run_dir, "fp32").logits(texts)
    assert np.abs(logits - expected).max() <= 1e-4


def test_reexport_is_skipped_when_nothing_changed(tmp_path: Path, exported_run: Config) -> None:
    from textclf_export.run import run
    from textclf_export.selection import TIE, choose_serving
    from textclf_train.data import load_labelled_data

    # Choosing and timing change no variant. Four variants, so a long route can be judged and the run is short.
    variants = ["fp32", "int8-qdq", "openvino-fp32", "openvino-int8"]
    cfg = _copy_run(exported_run, tmp_path, route_long_calls=True, variants=variants)
    model = cfg.run_dir / ONNX_DIR / "fp32" / "model.onnx"
    before = model.stat().st_mtime_ns
    run(cfg, cfg.run_dir, load_data=load_labelled_data)
    export = require_export(cfg.run_dir)
    assert list(export.variants) == variants and all(record.skipped for record in export.variants.values())
    assert model.stat().st_mtime_ns == before
    # Not pinned: the serving variant is the one the recorded costs and tie choose (the timing on real texts with
    # its A/A control), and the reason says why; a long route, if kept, won its repeats by 10 % or more.
    timing = export.serving_timing
    costs = {name: record.serving_cost() for name, record in export.variants.items() if record.passed}
    assert timing["costs"] == costs and set(timing["ms_per_text"]) == {"b1", "b32-sorted", "long"}
    assert timing["aa_control"] == "fp32 (A/A)" and timing["tie"] == max(TIE, timing["aa_spread"])
    assert all(set(by_name) == {*costs, "fp32 (A/A)"} for by_name in timing["ms_per_text"].values())
    assert export.serving_variant == choose_serving(costs, timing["tie"])
    assert export.serving_reason is not None and "lowest serving cost on real texts" in export.serving_reason
    route = export.long_route
    trial = timing.get("long_trial")
    assert (route is not None) == bool(trial and trial["kept"])
    if route is not None:
        assert route.variant == trial["candidate"] != export.serving_variant and trial["gain"] >= 0.10
        assert route.max_short_tokens_per_text == export.max_seq_len - 1
    served = Classifier.from_run(cfg.run_dir)
    assert served.variant == export.serving_variant and len(served.predict(["a good film"])) == 1

    # A changed gate is a changed input: that variant is judged again.
    changed = cfg.model_copy(update={"export": cfg.export.model_copy(update={"max_accuracy_drop": 0.01})})
    run(changed, changed.run_dir, load_data=load_labelled_data)
    assert not any(r.skipped for r in require_export(cfg.run_dir).variants.values())


def test_tampered_file_is_detected_and_rebuilt(tmp_path: Path, exported_run: Config) -> None:
    from textclf_export.run import run
    from textclf_train.data import load_labelled_data

    cfg = _copy_run(exported_run, tmp_path)
    model = cfg.run_dir / ONNX_DIR / "int8-dynamic" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match=r"int8-dynamic/model\.onnx: sha256"):
        Classifier.from_run(cfg.run_dir, "int8-dynamic")
    run(cfg, cfg.run_dir, load_data=load_labelled_data)
    variants = require_export(cfg.run_dir).variants
    assert variants["int8-dynamic"].skipped is False and variants["fp32"].skipped is True
    Classifier.from_run(cfg.run_dir, "int8-dynamic")  # verified again


def test_impossible_gate_refuses_with_reason_and_leaves_no_folder(tmp_path: Path, exported_run: Config) -> None:
    from textclf_export.run import run
    from textclf_train.data import load_labelled_data

    cfg = _copy_run(exported_run, tmp_path, max_fp32_parity=1e-15, variants=["fp32", "int8-dynamic"])
    run(cfg, cfg.run_dir, load_data=load_labelled_data)
    export = require_export(cfg.run_dir)
    fp32 = export.variants["fp32"]
    assert fp32.passed is False
    assert "parity" in fp32.reason and "> 1e-15" in fp32.reason
    assert fp32.files == {}
    assert not (cfg.run_dir / ONNX_DIR / "fp32").exists(), "a refused variant leaves no folder"
    assert export.serving_variant == "int8-dynamic"
    assert not [p for p in (cfg.run_dir / ONNX_DIR).iterdir() if p.name.startswith(".")], "no staging left"
    with pytest.raises(ArtifactError, match="refused"):
        Classifier.from_run(cfg.run_dir, "fp32")


def test_no_passing_variant_is_an_error_but_verdicts_are_recorded(tmp_path: Path, exported_run: Config) -> None:
    cfg = _copy_run(exported_run, tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--set",
            f"artifacts_root={cfg.artifacts_root}",
            "--set",
            f"data.path={cfg.data.path}",
            "--set",
            "export.variants=[fp32]",
            "--set",
            "export.max_fp32_parity=1e-15",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "no CPU variant passed" in result.output
    assert require_export(cfg.run_dir).variants["fp32"].passed is False


def test_export_of_an_outside_checkpoint(tmp_path: Path) -> None:
    checkpoint = build_tiny_bert(tmp_path / "their-model", num_labels=2, seed=3)
    rows = [(text, "class_0" if label == "pos" else "class_1") for text, label in tiny_texts(80)]
    data = write_csv(tmp_path / "data.csv", rows)
    artifacts = tmp_path / "artifacts"
    args = [
        "export",
        "--checkpoint",
        str(checkpoint),
        "--set",
        f"artifacts_root={artifacts}",
        "--set",
        f"data.path={data}",
        "--set",
        "export.timing_seconds=0.2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "serving variant" in result.output
    manifest = read_manifest(artifacts / "default")
    assert manifest is not None and manifest.train is None, "an outside checkpoint has no train section"
    export = require_export(artifacts / "default")
    assert export.checkpoint.is_own is False
    fp32_diff = export.variants["fp32"].parity_max_abs_diff
    assert fp32_diff is not None and fp32_diff <= 1e-4
    config = json.loads((artifacts / "default" / ONNX_DIR / "fp32" / "config.json").read_text())
    assert config["id2label"] == {"0": "class_0", "1": "class_1"}


def test_export_of_a_distilbert_whose_tokenizer_emits_token_type_ids(tmp_path: Path) -> None:
    checkpoint = build_tiny_distilbert(tmp_path / "distil")
    rows = [(text, "class_0" if label == "pos" else "class_1") for text, label in tiny_texts(60)]
    data = write_csv(tmp_path / "data.csv", rows)
    artifacts = tmp_path / "artifacts"
    args = ["export", "--checkpoint", str(checkpoint), "--set", f"artifacts_root={artifacts}"]
    args += ["--set", f"data.path={data}", "--set", "export.timing_seconds=0.2", "--set", "export.variants=[fp32]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fp32 = require_export(artifacts / "default").variants["fp32"]
    assert fp32.passed and fp32.parity_max_abs_diff is not None and fp32.parity_max_abs_diff <= 1e-4


def test_outside_checkpoint_with_other_labels_is_refused(tmp_path: Path) -> None:
    checkpoint = build_tiny_bert(tmp_path / "their-model", num_labels=2)
    data = write_csv(tmp_path / "data.csv", tiny_texts(40))  # labels pos/neg, not class_0/class_1
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--checkpoint",
            str(checkpoint),
            "--set",
            f"data.path={data}",
            "--set",
            f"artifacts_root={tmp_path / 'a'}",
        ],
    )
    assert result.exit_code == 2
    assert "do not match the checkpoint's id2label" in result.output


def test_export_without_training_names_the_missing_stage(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--set", f"artifacts_root={tmp_path}"])
    assert result.exit_code == 2
    assert "textclf train" in result.output


def test_every_passing_variant_is_timed_on_real_texts_with_an_a_a_control(exported_run: Config) -> None:
    from textclf_export.gates import CASES, SORTED_BATCH, long_texts, time_variants, timing_cases
    from textclf_export.selection import LONG_REPEATS, confirm_long

    export = require_export(exported_run.run_dir)
    passing = [n for n, r in export.variants.items() if r.passed and n in variants_on("cpu")]
    classifiers = {n: Classifier.from_run(exported_run.run_dir, n) for n in passing[:3]}
    texts = [json.loads(line)["text"] for line in (exported_run.run_dir / EVAL_TEXTS).read_text().splitlines()]
    first = next(iter(classifiers.values()))
    cases = timing_cases(first, texts)
    assert list(cases) == list(CASES)
    singles = [len(call[0].ids) for call in cases["b1"]]
    assert all(len(call) == 1 for call in cases["b1"]) and len(set(singles)) > 1  # lengths spread over the split
    assert all(len(call) == min(SORTED_BATCH, len(texts)) for call in cases["b32-sorted"])
    for call in cases["b32-sorted"]:
        assert [len(e.ids) for e in call] == sorted(len(e.ids) for e in call)
    # Long texts: real test texts end to end, cut at max_seq_len: full windows, no padding.
    windows = long_texts(first, texts)
    assert all(len(w.ids) == first.max_seq_len and w.overflowing and 0 not in w.attention_mask for w in windows)
    assert len({tuple(w.ids) for w in windows}) > 1

    run = time_variants(classifiers, texts, seconds=0.05)
    assert set(run.timings) == set(classifiers) and run.control == f"{next(iter(classifiers))} (A/A)"
    assert all(t.latency_ms > 0 and t.batch32_ms_per_text > 0 and t.long_ms_per_text > 0 for t in run.timings.values())
    assert set(run.aa_spread_by_case) == set(CASES) and run.aa_spread == max(run.aa_spread_by_case.values())
    # The long-text A/B on the real engines: LONG_REPEATS readings, and the verdict the median of them gives.
    serving, candidate = list(classifiers)[:2]
    trial = confirm_long(classifiers, serving, candidate, texts, seconds=0.01, spread=run.aa_spread)
    assert len(trial.gains) == LONG_REPEATS and all(gain > -1 for gain in trial.gains)
    assert trial.kept == (trial.gain >= max(0.10, run.aa_spread))
