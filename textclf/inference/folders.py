"""A variant folder on disk: the names of its files, its sidecar (`textclf.json`, written by export), the engine
that sidecar names and how to load it, and the manifest's record of the folder."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from textclf.artifacts.records import FileEntry
from textclf.artifacts.schema import ExportSection, VariantRecord
from textclf.errors import ArtifactError
from textclf.inference.engines import (
    ENGINE_KEY,
    MODEL_FILES,
    OPENVINO_LENGTH_STEP,
    Engine,
    EngineName,
    OpenVinoEngine,
    OrtEngine,
)
from textclf.paths import ONNX_DIR

logger = logging.getLogger(__name__)

MODEL_FILE = MODEL_FILES["onnxruntime"]  # what the ORT builders write and read
# The file whose sha256 names a variant's model (X-Model-Sha256): an OpenVINO IR's weights are in its .bin.
IDENTITY_FILES: dict[EngineName, str] = {"onnxruntime": "model.onnx", "openvino": "model.bin"}
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
SIDECAR_FILE = "textclf.json"  # written by export: max_seq_len, the variant's name, session settings
DISABLED_OPTIMIZERS_KEY = "disabled_optimizers"  # sidecar: ORT graph fusions export measured as slower here
OPENVINO_HINT_KEY = "openvino_hint"  # sidecar: the PERFORMANCE_HINT export chose
OPENVINO_STEP_KEY = "openvino_length_step"  # sidecar: the sequence-length step OpenVINO calls are padded to
OPENVINO_PRECISION_KEY = "openvino_precision"  # sidecar: OpenVINO's inference precision (f32, or bf16 where native)


def engine_of(sidecar: Mapping[str, Any]) -> EngineName:
    """The engine a variant's sidecar names (ONNX Runtime for a folder written before there was a choice)."""
    name = sidecar.get(ENGINE_KEY, "onnxruntime")
    if name not in MODEL_FILES:
        raise ArtifactError(f"unknown engine {name!r} in a variant's {SIDECAR_FILE}; known: {', '.join(MODEL_FILES)}")
    return name


def load_engine(
    variant_dir: Path,
    sidecar: Mapping[str, Any],
    *,
    threads: int,
    inter_op_threads: int = 1,
    use_cuda: bool = False,
    allow_spinning: bool = True,
    pad_id: int = 0,
) -> Engine:
    """The engine of one variant folder, with the settings export recorded in its sidecar."""
    name = engine_of(sidecar)
    model = Path(variant_dir) / MODEL_FILES[name]
    if name == "openvino":
        return OpenVinoEngine(
            model,
            threads=threads,
            hint=sidecar.get(OPENVINO_HINT_KEY, "LATENCY"),
            length_step=int(sidecar.get(OPENVINO_STEP_KEY, OPENVINO_LENGTH_STEP)),
            precision=sidecar.get(OPENVINO_PRECISION_KEY, "f32"),
            pad_id=pad_id,
        )
    return OrtEngine(
        model,
        threads=threads,
        inter_op_threads=inter_op_threads,
        use_cuda=use_cuda,
        allow_spinning=allow_spinning,
        # Fusions export timed as slower on its machine for this graph (e.g. SkipLayerNorm next to int8 MatMuls).
        disabled_optimizers=list(sidecar.get(DISABLED_OPTIMIZERS_KEY) or []),
    )


def read_sidecar(variant_dir: Path) -> dict[str, Any]:
    """The variant's textclf.json (empty for a folder export did not write)."""
    path = Path(variant_dir) / SIDECAR_FILE
    sidecar: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return sidecar


def identity_sha256(files: Mapping[str, FileEntry], engine: EngineName) -> str | None:
    """The sha256 that names a variant's model: that of the engine's weights file (None where it is not listed)."""
    identity = files.get(IDENTITY_FILES[engine])
    return identity.sha256 if identity else None


def passed_variant(run_dir: Path, export: ExportSection, name: str) -> VariantRecord:
    """The manifest's record of a variant that passed its gates.

    Raises:
        ArtifactError: the variant is not in the manifest, or export refused it.
    """
    record = export.variants.get(name)
    if record is None:
        raise ArtifactError(f"{run_dir}: variant {name!r} is not in the manifest")
    if not record.passed:
        raise ArtifactError(f"{run_dir}: variant {name!r} was refused at export: {record.reason}")
    return record


def shipped_variants(run_dir: Path, export: ExportSection) -> list[str]:
    """The passing variants whose folders are in `run_dir` (all of them in a local run; in a Bento, those shipped)."""
    return [name for name, record in export.variants.items() if record.passed and (run_dir / ONNX_DIR / name).is_dir()]
