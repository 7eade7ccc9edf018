"""File and folder names that several stages rely on, kept in one place."""

from __future__ import annotations

from pathlib import Path

MANIFEST_NAME = "manifest.json"
CHECKPOINT_DIR = "checkpoint"
ONNX_DIR = "onnx"
TRAINER_STATE_DIR = "trainer"  # Trainer's intermediate checkpoints, used by --resume
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
EVAL_TEXTS = "eval_texts.jsonl"  # the test texts (and label ids) export judged on; benchmarks draw from it
BENCH_JSON = "bench.json"  # reports/<run>/: engine sweep results
LOAD_JSON = "load.json"  # reports/<run>/: HTTP load results
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"  # `textclf schema` writes the JSON Schemas here
