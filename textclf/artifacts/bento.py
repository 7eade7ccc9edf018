"""Package a run for BentoML: import its shipped variants (the served ones, and any `textclf build --variants`
adds for `serve.variant` to name) into the model store, then build the Bento with only the engines they run on."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from textclf.artifacts.bento_image import setup_script
from textclf.artifacts.files import atomic_write_text, sha256_bytes
from textclf.artifacts.manifest import require_manifest, require_section, verify_files
from textclf.artifacts.schema import ExportSection, VariantRecord
from textclf.errors import ArtifactError
from textclf.inference.engines import EngineName
from textclf.inference.folders import IDENTITY_FILES, identity_sha256
from textclf.inference.variants import variant_spec
from textclf.paths import MANIFEST_NAME, ONNX_DIR

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BENTOFILE = PROJECT_ROOT / "bentofile.yaml"


def model_version(run: str, variant: str, sha256: str) -> str:
    """A store version derived from the manifest: the same artifacts always get the same tag."""
    raw = f"{run}-{variant}-{sha256[:12]}".lower()
    return re.sub(r"[^a-z0-9_.-]", "-", raw)


def shipped_variants(export: ExportSection, extra: Sequence[str] = ()) -> list[str]:
    """What a Bento ships: the variants the model serves (`export.served_variants()`: the serving one, and the long
    route's), then `extra` ones (`textclf build --variants`) a deploy may name with `serve.variant`.

    Raises:
        ArtifactError: no serving variant, or an extra one that did not pass at export (the message names those
            that did).
    """
    names = export.served_variants()
    if not names:
        raise ArtifactError("the export chose no serving variant; nothing to package")
    passing = [name for name, record in export.variants.items() if record.passed]
    for name in extra:
        if name not in passing:
            raise ArtifactError(f"--variants {name}: not a passing variant of this run; it has {', '.join(passing)}")
    return list(dict.fromkeys([*names, *extra]))


def import_model(run_dir: Path, model_name: str, variants: Sequence[str] = ()) -> str:
    """Copy the manifest and the shipped variants of `run_dir` into the BentoML model store.

    The model folder mirrors the run folder (`manifest.json` + `onnx/<variant>/`) so the service loads it with
    the same verified path as a local run. Importing the same artifacts twice is a no-op.

    Args:
        run_dir: the exported run.
        model_name: the store's model name (`serve.model_name`).
        variants: passing variants to ship beside the served ones (`shipped_variants`).

    Returns:
        The model tag, ``name:version``.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    manifest = require_manifest(run_dir, "export")
    export = require_section(manifest.export, run_dir, "export")
    if export.ignored_route is not None:
        logger.warning(
            "%s was exported by an older textclf: its long-call route is ignored (%s is not shipped for it); "
            "re-export to route long texts",
            run_dir,
            export.ignored_route,
        )
    names = shipped_variants(export, variants)
    records = {name: export.variants[name] for name in names}
    for name, record in records.items():
        verify_files(run_dir / ONNX_DIR / name, record.files)
    variant = names[0]
    # Every shipped model is part of the version: another route or another extra variant is another model version.
    digests = [model_sha256(records[name], variant_engine(name)) for name in names]
    sha256 = digests[0] if len(names) == 1 else sha256_bytes(":".join(digests).encode())
    tag = f"{model_name}:{model_version(manifest.run, '+'.join(names), sha256)}"
    try:
        bentoml.models.get(tag)
        logger.info("model %s is already in the store", tag)
        return tag
    except NotFound:
        pass
    # Only the shipped variants travel; the manifest keeps the other variants' verdicts out.
    trimmed = manifest.model_copy(update={"export": export.model_copy(update={"variants": records})})
    metadata: dict[str, Any] = {
        "variant": variant,
        **({"long_route": export.long_route.model_dump()} if export.long_route else {}),
        "variants": names,
        "engines": sorted({variant_engine(name) for name in names}),
        "sha256": sha256,
        "test_accuracy": records[variant].test_accuracy,
        "accuracy_delta": records[variant].accuracy_delta,
        "max_seq_len": export.max_seq_len,
        "labels": export.label_names,
    }
    with bentoml.models.create(tag, labels={"run": manifest.run, "variant": variant}, metadata=metadata) as model:
        target = Path(model.path)
        for name in names:
            shutil.copytree(run_dir / ONNX_DIR / name, target / ONNX_DIR / name)
        (target / MANIFEST_NAME).write_text(trimmed.to_json())
    logger.info("imported %s (%s) into the BentoML model store", tag, ", ".join(names))
    return tag


def model_sha256(record: VariantRecord, engine: EngineName) -> str:
    """The sha256 that names a variant's model (`identity_sha256`); a manifest that lists no weights file for it
    cannot name a model version."""
    sha256 = identity_sha256(record.files, engine)
    if sha256 is None:
        raise ArtifactError(f"the manifest lists no {IDENTITY_FILES[engine]} for a served variant; export it again")
    return sha256


def variant_engine(name: str) -> EngineName:
    return variant_spec(name).engine


# The pip package of each engine, as this environment has it installed (the Bento pins what was tested here).
ENGINE_PACKAGES: dict[EngineName, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
# Written for the build, like the generated bentofile (BentoML reads both from paths); relative to the build context
# and not hidden, or BentoML refuses it as a setup script.
SETUP_SCRIPT = "deploy/engines.generated.sh"


def bentofile_for(engines: set[EngineName], bentofile: Path = BENTOFILE) -> tuple[dict[str, Any], list[str]]:
    """The bentofile with only the served engines, and the engine packages its image's setup script installs.

    A Bento that serves OpenVINO alone ships no onnxruntime, and one that serves ONNX Runtime alone no openvino.
    The CPU engines are not in the Python packages: the setup script (`textclf.artifacts.bento_image`, written by
    `build_bento`) installs them pinned and leaves out, in the same image layer, what serving never loads. The GPU
    flavour's onnxruntime-gpu (not an engine package name here) stays in the packages as it is.
    """
    spec: dict[str, Any] = yaml.safe_load(bentofile.read_text())
    engine_names = set(ENGINE_PACKAGES.values())
    packages = [p for p in spec["python"]["packages"] if re.split(r"[=<>!~ ]", p, maxsplit=1)[0] not in engine_names]
    spec["python"]["packages"] = packages
    has_gpu_runtime = any(p.startswith("onnxruntime-gpu") for p in packages)
    installed = [ENGINE_PACKAGES[e] for e in sorted(engines) if not (e == "onnxruntime" and has_gpu_runtime)]
    if installed:
        docker = spec.setdefault("docker", {})
        if docker.get("setup_script"):
            raise ArtifactError(f"{bentofile}: has its own docker.setup_script; the engines' image step needs it")
        docker["setup_script"] = SETUP_SCRIPT
    return spec, installed


def build_bento(run_dir: Path, bentofile: Path = BENTOFILE, variants: Sequence[str] = ()) -> str:
    """`bentoml build` of the project's bentofile with the engines of the run's shipped variants (`variants`: those
    shipped beside the served ones, as `import_model` took them); returns the Bento's tag."""
    import bentoml

    export = require_section(require_manifest(run_dir, "export").export, run_dir, "export")
    engines = {variant_engine(name) for name in shipped_variants(export, variants)}
    spec, installed = bentofile_for(engines, bentofile)
    # BentoML reads a bentofile from a path; a hidden one beside the original keeps its build context and includes.
    generated = bentofile.with_name(f".{bentofile.stem}.generated.yaml")
    script = bentofile.parent / SETUP_SCRIPT
    atomic_write_text(generated, yaml.safe_dump(spec, sort_keys=False))
    try:
        if installed:
            atomic_write_text(script, setup_script(installed))
            script.chmod(0o755)  # BentoML refuses a setup script it cannot execute
        bento = bentoml.bentos.build_bentofile(str(generated), build_ctx=str(bentofile.parent))
    finally:
        generated.unlink(missing_ok=True)
        script.unlink(missing_ok=True)
    logger.info("built Bento %s (engines: %s)", bento.tag, ", ".join(sorted(engines)))
    return str(bento.tag)
