"""Shared fixtures: a tiny random base model, a small labelled CSV, and the config that trains on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import build_tiny_bert, tiny_texts, write_csv
from textclf.config import Config, load_config

# Tests never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT without a classification head (the 'base model' to fine-tune)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", tiny_texts(320))


def tiny_config(tmp_path: Path, base: Path, data: Path, *extra: str) -> Config:
    """The config of a quick CPU training on the tiny model and data, artifacts under tmp_path."""
    return load_config(
        overrides=[
            f"artifacts_root={tmp_path / 'artifacts'}",
            f"reports_root={tmp_path / 'reports'}",
            f"data.path={data}",
            f"train.base_model={base}",
            "train.epochs=3",
            "train.batch_size=8",
            "train.learning_rate=0.003",
            "train.warmup_ratio=0",
            "train.max_seq_len=32",
            "train.num_threads=1",
            "train.logging_steps=5",
            *extra,
        ],
        environ={},
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_csv: Path) -> Config:
    """One tiny training shared by the tests that only read its outputs."""
    from textclf_train.run import run

    cfg = tiny_config(tmp_path_factory.mktemp("trained"), tiny_base, tiny_csv)
    run(cfg, cfg.run_dir)
    return cfg


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory: pytest.TempPathFactory, trained_run: Config) -> Config:
    """The tiny trained run, copied and exported with every CPU variant (short timing)."""
    import shutil

    from textclf.inference.variants import variants_on
    from textclf_export.run import run
    from textclf_train.data import load_labelled_data

    root = tmp_path_factory.mktemp("exported")
    shutil.copytree(trained_run.artifacts_root, root / "artifacts")
    cfg = trained_run.model_copy(
        update={
            "artifacts_root": root / "artifacts",
            # The serving variant is pinned and no long-call route is timed: the served answers must equal
            # `Classifier.predict`'s to 1e-5 whatever the batching, and int8-dynamic (a timing's pick on a tiny model
            # now and then) depends on its batch by construction, as would a route across two engines. Every CPU
            # variant is built, not only the default ones, so each builder is tested.
            "export": trained_run.export.model_copy(
                update={
                    "variants": list(variants_on("cpu")),
                    "timing_seconds": 0.4,
                    "serving_variant": "optimized",
                    "route_long_calls": False,
                }
            ),
        }
    )
    run(cfg, cfg.run_dir, load_data=load_labelled_data)
    return cfg
