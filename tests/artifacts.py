"""Test helpers for the typed artifacts: small valid manifest sections (for tests that need the manifest's
plumbing, not a real training) and validation against the JSON Schemas that `textclf schema` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from textclf.artifacts.records import FileEntry, Machine
from textclf.artifacts.schema import (
    BaseModelRecord,
    BatchInvariance,
    DataRecord,
    EvalTextsRecord,
    ExportCheckpoint,
    ExportSection,
    FolderRecord,
    PyTorchReference,
    SplitMetrics,
    SplitRecord,
    TrainerRecord,
    TrainHardware,
    TrainMetrics,
    TrainSection,
    VariantRecord,
)
from textclf.paths import SCHEMAS_DIR

_SHA = "0" * 64
MACHINE = Machine(
    cpu_model="test cpu",
    arch="x86_64",
    cores=2,
    isa={"avx2": True},
    quantization_preset="avx2",
    os="Linux",
    python="3.11",
)


def _metrics(accuracy: float) -> SplitMetrics:
    return SplitMetrics(accuracy=accuracy, macro_f1=accuracy, n=4, per_class={}, confusion_matrix=[[2, 0], [0, 2]])


def train_section(accuracy: float = 0.75) -> TrainSection:
    """A train section whose only meaningful number is the test (and validation) accuracy."""
    return TrainSection(
        completed_at="2026-01-01T00:00:00+00:00",
        wall_time_s=1.0,
        data=DataRecord(
            source={"kind": "file"},
            config={},
            splits={name: SplitRecord(rows=4, sha256=_SHA) for name in ("train", "validation", "test")},
        ),
        base_model=BaseModelRecord(kind="hub", id="tiny"),
        label_names=["neg", "pos"],
        max_seq_len=32,
        checkpoint=FolderRecord(path="checkpoint", sha256=_SHA, files={}),
        confusion_matrix_png="confusion_matrix.png",
        metrics=TrainMetrics(validation=_metrics(accuracy), test=_metrics(accuracy)),
        trainer=TrainerRecord(epochs_run=1.0, global_steps=1, validation_history=[]),
        hardware=TrainHardware(device="cpu", world_size=1, torch_threads=1),
    )


def export_section(serving_variant: str = "fp32") -> ExportSection:
    """An export section with one passing variant (its files are not on disk)."""
    record = VariantRecord(
        passed=True,
        reason="passed every gate",
        parity_max_abs_diff=1e-6,
        test_accuracy=0.75,
        accuracy_delta=0.0,
        batch_invariance=BatchInvariance(texts=4, batch_size=32, flips=0, max_prob_change=0.0),
        files={"model.onnx": FileEntry(sha256=_SHA, bytes=1)},
        input_key=_SHA,
        built_at="2026-01-01T00:00:00+00:00",
        bytes=1,
    )
    return ExportSection(
        checkpoint=ExportCheckpoint(path="checkpoint", sha256=_SHA, is_own=True),
        max_seq_len=32,
        label_names=["neg", "pos"],
        pytorch=PyTorchReference(test_accuracy=0.75, test_macro_f1=0.75),
        test_texts=4,
        eval_texts=EvalTextsRecord(path="eval_texts.jsonl", sha256=_SHA),
        machine=MACHINE,
        variants={serving_variant: record},
        serving_variant=serving_variant,
    )


def validate_against_schema(document: dict[str, Any], schema_file: str, schemas_dir: Path = SCHEMAS_DIR) -> None:
    """Validate a parsed JSON file against one of the written JSON Schemas (raises on any violation)."""
    schema = json.loads((schemas_dir / schema_file).read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
