"""`textclf export`: ONNX variants of a checkpoint, each proven or refused, and the serving variant chosen."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from textclf.artifacts.files import atomic_write_text, sha256_bytes, sha256_file
from textclf.artifacts.manifest import (
    Manifest,
    file_entries,
    folder_digest,
    package_versions,
    read_manifest,
    require_manifest,
    require_section,
    update_manifest,
    verify_files,
)
from textclf.artifacts.records import Machine
from textclf.artifacts.schema import (
    EvalTextsRecord,
    ExportCheckpoint,
    ExportSection,
    PyTorchReference,
    VariantRecord,
)
from textclf.config import Config
from textclf.errors import ArtifactError, ExportError
from textclf.hardware import isa_preset, machine_info
from textclf.inference.runtime import Classifier
from textclf.inference.variants import VARIANTS, variant_spec, variants_on
from textclf.paths import CHECKPOINT_DIR, EVAL_TEXTS, ONNX_DIR
from textclf_export.builders import BuildSource, export_fp32
from textclf_export.drift_reference import write_references
from textclf_export.evaldata import DataLoader, checkpoint_labels, checkpoint_threshold, load_eval_data
from textclf_export.gates import TestLabel, TimingRun, scores_from_logits, time_variants
from textclf_export.judging import BuildContext, Reference, build_and_judge
from textclf_export.reference import pytorch_logits
from textclf_export.selection import Selection, select

logger = logging.getLogger(__name__)

_KEY_PACKAGES = (
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "torch",
    "transformers",
)
_NOT_IN_KEY = (
    "serving_variant",
    "timing_seconds",
    "variants",
    "route_long_calls",
)  # choosing/timing changes no variant
# Bumped whenever a builder or the session tuning changes what a variant folder holds (or how it is chosen):
# earlier folders rebuild. 7: one engine per machine (the serving cost on real texts, one long route at most).
BUILD_VERSION = 7


def _resolve_checkpoint(run_dir: Path, checkpoint: Path | None, cfg: Config) -> tuple[Path, int, Manifest | None]:
    """The checkpoint folder, its max_seq_len, and the manifest (whose `train` section is kept only for the
    run's own checkpoint)."""
    manifest = read_manifest(run_dir)
    if checkpoint is None:
        manifest = require_manifest(run_dir, "train")
        train = require_section(manifest.train, run_dir, "train")
        own = run_dir / CHECKPOINT_DIR
        verify_files(own, train.checkpoint.files)
        return own, train.max_seq_len, manifest
    if not (checkpoint / "config.json").is_file():
        raise ArtifactError(f"--checkpoint {checkpoint}: no config.json; give a save_pretrained folder")
    if not (checkpoint / "tokenizer.json").is_file():
        raise ArtifactError(f"--checkpoint {checkpoint}: no tokenizer.json; the runtime needs a fast tokenizer")
    config = json.loads((checkpoint / "config.json").read_text())
    if not config.get("id2label"):
        raise ArtifactError(f"--checkpoint {checkpoint}: config.json has no id2label; not a classifier")
    # Another model's training does not apply to this checkpoint.
    outside = manifest.model_copy(update={"train": None}) if manifest else None
    return checkpoint, cfg.train.max_seq_len, outside


def _input_key(checkpoint_sha: str, name: str, cfg: Config, max_seq_len: int, splits_sha: str) -> str:
    """Everything a variant's folder, verdict and confidence depend on (the confidence keys are export config keys,
    and the splits' sha256 covers the validation split it is fitted on): unchanged key → the export can be skipped."""
    export_cfg = {k: v for k, v in cfg.export.model_dump(mode="json").items() if k not in _NOT_IN_KEY}
    versions = {k: v for k, v in package_versions().items() if k in _KEY_PACKAGES}
    payload = [checkpoint_sha, name, max_seq_len, export_cfg, splits_sha, versions, isa_preset(), BUILD_VERSION]
    return sha256_bytes(json.dumps(payload, sort_keys=True).encode())


def _reusable(previous: VariantRecord | None, key: str, folder: Path) -> bool:
    if previous is None or previous.input_key != key:
        return False
    if not previous.passed:
        return not folder.exists()
    try:
        verify_files(folder, previous.files)
    except ArtifactError as exc:
        logger.warning("rebuilding %s: %s", folder.name, exc)
        return False
    return True


def write_eval_texts(run_dir: Path, texts: list[str], labels: list[TestLabel]) -> Path:
    """The test texts and label ids the gates judged on, one JSON object per line (read by the benchmarks)."""
    path = run_dir / EVAL_TEXTS
    lines = (json.dumps({"text": text, "label": label}) for text, label in zip(texts, labels, strict=True))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _speed_gate(variants: dict[str, VariantRecord], onnx_dir: Path) -> None:
    """Refuse a passing `must_beat_fp32` variant that runs no faster than fp32 here (its folder goes)."""
    fp32 = variants.get("fp32")
    baseline = fp32.serving_cost() if fp32 else None
    for name, record in variants.items():
        cost = record.serving_cost()
        if not (variant_spec(name).must_beat_fp32 and record.passed) or cost is None or baseline is None:
            continue
        if cost >= baseline:
            reason = (
                f"no faster than fp32 on this CPU ({cost:.2f} vs {baseline:.2f} ms, serving cost on real texts): "
                "ONNX Runtime's CPU provider has no fast kernels for it here"
            )
            logger.info("%s: refused: %s", name, reason)
            shutil.rmtree(onnx_dir / name, ignore_errors=True)
            refused = {"passed": False, "reason": reason, "files": {}, "bytes": 0, "confidence": None}
            variants[name] = record.model_copy(update=refused)


def _timed_classifiers(
    passing: list[str], variants: dict[str, VariantRecord], onnx_dir: Path, cfg: Config
) -> dict[str, Classifier]:
    """Every passing CPU variant, loaded for timing as the service runs it.

    ONNX Runtime's pool threads spin as the service runs them (`serve.ort_spinning`, off by default): spinning
    threads left by one variant's call take the cores from the next variant's call in an interleaved timing.
    """
    spin = cfg.serve.ort_spinning
    classifiers = {n: Classifier(onnx_dir / n, expected_files=variants[n].files, allow_spinning=spin) for n in passing}
    logger.info("timing %d variants on real texts", len(classifiers))
    return classifiers


@dataclass
class Timed:
    """The passing CPU variants, loaded, and their interleaved timing (none where no CPU variant passed)."""

    classifiers: dict[str, Classifier]
    run: TimingRun | None


def _time_passing(variants: dict[str, VariantRecord], onnx_dir: Path, texts: list[str], cfg: Config) -> Timed:
    """Time every passing CPU variant on real texts (their timing fields), then apply the speed gate."""
    for name, record in variants.items():
        variants[name] = record.model_copy(update={"bytes": sum(f.bytes for f in record.files.values())})
    passing = [n for n in variants_on("cpu") if n in variants and variants[n].passed]
    if not passing:
        return Timed({}, None)
    classifiers = _timed_classifiers(passing, variants, onnx_dir, cfg)
    run = time_variants(classifiers, texts, cfg.export.timing_seconds)
    for name, timing in run.timings.items():
        variants[name] = variants[name].model_copy(update=dataclasses.asdict(timing))
    _speed_gate(variants, onnx_dir)
    return Timed(classifiers, run)


def _select(variants: dict[str, VariantRecord], timed: Timed, texts: list[str], cfg: Config) -> Selection:
    """The serving variant (and long route) among the passing timed variants, or the pinned one.

    Raises:
        ExportError: the pinned variant was refused, or no CPU variant passed.
    """
    pinned = cfg.export.serving_variant
    if pinned is not None and not variants[pinned].passed:
        raise ExportError(f"export.serving_variant={pinned} was refused: {variants[pinned].reason}")
    costs = {n: c for n in timed.classifiers if variants[n].passed and (c := variants[n].serving_cost()) is not None}
    if timed.run is None or not costs:
        if pinned is None:
            raise ExportError("no CPU variant passed its gates; see the reasons in the table and the manifest")
        return Selection(pinned, "pinned by export.serving_variant")
    seconds = cfg.export.timing_seconds / 3  # a repeat of the long case gets what a case got in the main timing
    kept = {n: timed.classifiers[n] for n in costs}
    return select(kept, timed.run, costs, texts, seconds, pinned=pinned, route_long_calls=cfg.export.route_long_calls)


def run(cfg: Config, run_dir: Path, *, load_data: DataLoader, checkpoint: Path | None = None) -> Path:
    """Export, judge and record every configured variant under `run_dir/onnx/`.

    Args:
        cfg: the whole config; `export` (and `data` for an outside checkpoint) is read.
        run_dir: `artifacts/<run>`.
        load_data: reads a data config into labelled splits (the train stage's `load_labelled_data`, passed in by
            the CLI: stages never import each other), so export judges on the very test split train held out.
        checkpoint: an outside `save_pretrained` classifier folder instead of the run's own checkpoint.

    Returns:
        The folder of the serving variant.

    Raises:
        ExportError: no variant passed (the manifest still records every verdict).
    """
    started = time.perf_counter()
    checkpoint, max_seq_len, manifest = _resolve_checkpoint(run_dir, checkpoint, cfg)
    checkpoint_sha = folder_digest(file_entries(checkpoint))
    eval_data = load_eval_data(cfg, manifest.train if manifest else None, checkpoint, load_data)
    logger.info("PyTorch reference on %d test texts", len(eval_data.test_texts))
    logits = pytorch_logits(checkpoint, eval_data.test_texts, max_seq_len)
    threshold = checkpoint_threshold(checkpoint)
    reference = Reference(logits, scores_from_logits(logits, eval_data.test_labels, threshold))
    test_sha = sha256_bytes("\n".join(eval_data.test_texts).encode())
    # Texts and labels: the validation split's labels are what the confidence is fitted to.
    validation = [eval_data.validation_texts, eval_data.validation_labels]
    splits_sha = sha256_bytes(json.dumps([test_sha, validation]).encode())

    import torch

    has_cuda = torch.cuda.is_available()
    previous = manifest.export.variants if manifest and manifest.export else {}
    onnx_dir = run_dir / ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    variants: dict[str, VariantRecord] = {}
    ordered: list[str] = [name for name in VARIANTS if name in cfg.export.variants]
    keys = {name: _input_key(checkpoint_sha, name, cfg, max_seq_len, splits_sha) for name in ordered}
    for name in ordered:
        if _reusable(previous.get(name), keys[name], onnx_dir / name):
            logger.info("%s: inputs unchanged since the last export; skipped", name)
            variants[name] = previous[name].model_copy(update={"skipped": True})
    to_build = [name for name in ordered if name not in variants]
    if to_build:
        with tempfile.TemporaryDirectory(prefix=".work-", dir=onnx_dir) as work:
            work_dir = Path(work)
            logger.info("exporting %s to ONNX", checkpoint)
            export_fp32(checkpoint, work_dir / "fp32-source")
            source = BuildSource(
                work_dir / "fp32-source", work_dir, eval_data.calibration_texts, max_seq_len, cfg.export
            )
            ctx = BuildContext(source, onnx_dir, eval_data, reference, has_cuda)
            for name in to_build:
                logger.info("%s: building and judging", name)
                variants[name] = build_and_judge(name, ctx, keys[name])
    variants = {name: variants[name] for name in ordered}
    timed = _time_passing(variants, onnx_dir, eval_data.test_texts, cfg)
    # Each passing CPU variant's drift reference: its test-split answers and the critical values of the served window.
    # With the validation split pooled in, export also counts the drift tests' false alarms on in-distribution data.
    write_references(
        onnx_dir,
        variants,
        timed.classifiers,
        eval_data.test_texts,
        cfg.serve.monitor_window,
        validation_texts=eval_data.validation_texts,
    )

    eval_file = write_eval_texts(run_dir, eval_data.test_texts, eval_data.test_labels)
    section = ExportSection(
        checkpoint=ExportCheckpoint(
            path=str(checkpoint), sha256=checkpoint_sha, is_own=checkpoint == run_dir / CHECKPOINT_DIR
        ),
        max_seq_len=max_seq_len,
        label_names=checkpoint_labels(checkpoint),
        problem_type="single_label_classification" if threshold is None else "multi_label_classification",
        threshold=threshold,
        gate_metric="accuracy" if threshold is None else "micro_f1",
        pytorch=PyTorchReference(
            test_accuracy=reference.scores.accuracy,
            test_macro_f1=reference.scores.macro_f1,
            test_micro_f1=reference.scores.micro_f1,
        ),
        test_texts=len(eval_data.test_texts),
        validation_texts=len(eval_data.validation_texts),
        eval_texts=EvalTextsRecord(path=EVAL_TEXTS, sha256=sha256_file(eval_file)),
        machine=Machine.model_validate(machine_info()),
        variants=variants,
    )
    try:
        choice = _select(variants, timed, eval_data.test_texts, cfg)
        serving = section.serving_variant = choice.serving
        section.serving_reason, section.long_route, section.serving_timing = choice.reason, choice.route, choice.record
    finally:
        section.wall_time_s = round(time.perf_counter() - started, 1)
        update_manifest(run_dir, section, config=cfg.to_dict())
    return onnx_dir / serving
