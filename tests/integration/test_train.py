"""Tiny trainings on a random 2-layer BERT: outputs, determinism, resume, and the torchrun path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.artifacts import export_section
from tests.conftest import tiny_config
from textclf.artifacts.manifest import read_manifest, require_train, verify_files
from textclf.config import Config
from textclf.paths import CHECKPOINT_DIR, CONFUSION_MATRIX_PNG, TRAINER_STATE_DIR


def test_training_writes_a_reloadable_checkpoint_and_full_manifest(trained_run: Config) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir = trained_run.run_dir
    checkpoint = run_dir / CHECKPOINT_DIR
    names = {p.name for p in checkpoint.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not any(n.endswith(".bin") for n in names), "safetensors only"
    assert not (run_dir / TRAINER_STATE_DIR).exists(), "intermediate checkpoints are removed after success"
    assert (run_dir / CONFUSION_MATRIX_PNG).read_bytes()[:4] == b"\x89PNG"

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert model.config.label2id == {"neg": 0, "pos": 1}
    assert AutoTokenizer.from_pretrained(checkpoint).is_fast

    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.run == run_dir.name and manifest.created_at
    assert manifest.config["train"]["epochs"] == 3  # the resolved config is free-form on purpose
    assert {"torch", "transformers", "datasets"} <= set(manifest.versions)
    train = require_train(run_dir)
    assert train.label_names == ["neg", "pos"]
    assert train.max_seq_len == 32
    assert train.base_model.kind == "local" and len(train.base_model.sha256 or "") == 64
    assert train.data.source["kind"] == "file"
    assert {s: v.rows for s, v in train.data.splits.items()} == {"train": 256, "validation": 32, "test": 32}
    assert all(len(v.sha256) == 64 for v in train.data.splits.values())
    for metrics in (train.metrics.validation, train.metrics.test):
        assert 0.0 <= metrics.accuracy <= 1.0 and 0.0 <= metrics.macro_f1 <= 1.0
        assert set(metrics.per_class) == {"neg", "pos"}
        assert set(metrics.per_class["pos"]) == {"precision", "recall", "f1", "support"}
        assert sum(map(sum, metrics.confusion_matrix)) == metrics.n == 32
    assert train.trainer.epochs_run == 3.0
    assert len(train.trainer.validation_history) == 3
    assert train.wall_time_s > 0
    verify_files(run_dir / CHECKPOINT_DIR, train.checkpoint.files)


def test_tiny_model_learns_the_cue_words(trained_run: Config) -> None:
    # The sentiment word decides the label in the tiny data, so three epochs must beat chance clearly.
    assert require_train(trained_run.run_dir).metrics.test.accuracy >= 0.8


def test_same_seed_gives_same_metrics(tmp_path: Path, tiny_base: Path, tiny_csv: Path, trained_run: Config) -> None:
    from textclf_train.run import run

    cfg = tiny_config(tmp_path, tiny_base, tiny_csv)
    run(cfg, cfg.run_dir)
    again = require_train(cfg.run_dir)
    first = require_train(trained_run.run_dir)
    assert again.metrics == first.metrics
    assert again.checkpoint.sha256 == first.checkpoint.sha256


def test_resume_continues_an_interrupted_run(tmp_path: Path, tiny_base: Path, tiny_csv: Path) -> None:
    from transformers import TrainerCallback

    from textclf_train.run import run

    class InterruptAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

    cfg = tiny_config(tmp_path, tiny_base, tiny_csv)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, cfg.run_dir, callbacks=[InterruptAfterFirstSave()])
    assert not (cfg.run_dir / CHECKPOINT_DIR).exists()
    manifest = read_manifest(cfg.run_dir)
    assert manifest is None or manifest.train is None, "an interrupted run must not claim success"
    saved = sorted((cfg.run_dir / TRAINER_STATE_DIR).glob("checkpoint-*"))
    assert len(saved) == 1

    run(cfg, cfg.run_dir, resume=True)
    train = require_train(cfg.run_dir)
    assert train.trainer.resumed_from == str(saved[0])
    assert train.trainer.epochs_run == 3.0
    assert train.trainer.global_steps == 3 * 32  # 256 rows / batch 8, three epochs


def test_retraining_drops_a_stale_export_section(tmp_path: Path, trained_run: Config) -> None:
    from textclf.artifacts.manifest import update_manifest
    from textclf_train.run import run

    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run.run_dir, run_dir)
    update_manifest(run_dir, export_section())
    cfg = trained_run.model_copy(update={"train": trained_run.train.model_copy(update={"epochs": 1})})
    run(cfg, run_dir)
    manifest = read_manifest(run_dir)
    assert manifest is not None and manifest.train is not None and manifest.export is None


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path: Path, tiny_base: Path, tiny_csv: Path) -> None:
    cfg = tiny_config(tmp_path, tiny_base, tiny_csv)
    textclf = shutil.which("textclf", path=str(Path(sys.executable).parent))
    assert textclf is not None
    overrides = [
        f"artifacts_root={cfg.artifacts_root}",
        f"data.path={cfg.data.path}",
        f"train.base_model={cfg.train.base_model}",
        "train.epochs=1",
        "train.batch_size=16",
        "train.max_seq_len=32",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--no-python", textclf]
    command += ["train", *[arg for item in overrides for arg in ("--set", item)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    train = require_train(cfg.run_dir)
    assert train.hardware.world_size == 2
    assert train.trainer.global_steps == 16  # 256 rows / global batch 16 (2 processes x 8)
    assert (cfg.run_dir / CHECKPOINT_DIR / "model.safetensors").is_file()
