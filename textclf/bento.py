"""Package a run for BentoML: import its serving variant into the model store, then build the Bento."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from textclf.errors import ArtifactError
from textclf.manifest import require_manifest, require_section, verify_files
from textclf.paths import MANIFEST_NAME, ONNX_DIR
from textclf.runtime import MODEL_FILE

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENTOFILE = PROJECT_ROOT / "bentofile.yaml"


def model_version(run: str, variant: str, sha256: str) -> str:
    """A store version derived from the manifest: the same artifacts always get the same tag."""
    raw = f"{run}-{variant}-{sha256[:12]}".lower()
    return re.sub(r"[^a-z0-9_.-]", "-", raw)


def import_model(run_dir: Path, model_name: str) -> str:
    """Copy the manifest and the serving variant of `run_dir` into the BentoML model store.

    The model folder mirrors the run folder (`manifest.json` + `onnx/<variant>/`) so the service loads it with
    the same verified path as a local run. Importing the same artifacts twice is a no-op.

    Returns:
        The model tag, ``name:version``.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    manifest = require_manifest(run_dir, "export")
    export = require_section(manifest.export, run_dir, "export")
    variant = export.serving_variant
    if not variant:
        raise ArtifactError(f"{run_dir}: the export chose no serving variant; nothing to package")
    record = export.variants[variant]
    verify_files(run_dir / ONNX_DIR / variant, record.files)
    sha256 = record.files[MODEL_FILE].sha256
    tag = f"{model_name}:{model_version(manifest.run, variant, sha256)}"
    try:
        bentoml.models.get(tag)
        logger.info("model %s is already in the store", tag)
        return tag
    except NotFound:
        pass
    # Only the serving variant travels; the manifest keeps the other variants' verdicts for the record.
    trimmed = manifest.model_copy(update={"export": export.model_copy(update={"variants": {variant: record}})})
    metadata: dict[str, Any] = {
        "variant": variant,
        "sha256": sha256,
        "test_accuracy": record.test_accuracy,
        "accuracy_delta": record.accuracy_delta,
        "max_seq_len": export.max_seq_len,
        "labels": export.label_names,
    }
    with bentoml.models.create(tag, labels={"run": manifest.run, "variant": variant}, metadata=metadata) as model:
        target = Path(model.path)
        shutil.copytree(run_dir / ONNX_DIR / variant, target / ONNX_DIR / variant)
        (target / MANIFEST_NAME).write_text(trimmed.to_json())
    logger.info("imported %s into the BentoML model store", tag)
    return tag


def build_bento(bentofile: Path = BENTOFILE) -> str:
    """`bentoml build` of the project's bentofile; returns the Bento's tag."""
    import bentoml

    bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(bentofile.parent))
    logger.info("built Bento %s", bento.tag)
    return str(bento.tag)
