"""Build one variant, judge it, fit its confidence when it passes, and commit its folder only then."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textclf.artifacts.files import now_iso, replace_dir
from textclf.artifacts.manifest import file_entries
from textclf.artifacts.schema import Attempt, VariantRecord, Verdict
from textclf.inference.folders import DISABLED_OPTIMIZERS_KEY, OPENVINO_PRECISION_KEY
from textclf.inference.runtime import Classifier, default_intra_op_threads
from textclf.inference.variants import VariantSpec, variant_spec
from textclf_export import builders, openvino_ir
from textclf_export.calibrate import variant_confidence
from textclf_export.evaldata import EvalData
from textclf_export.gates import MetricScores, batch_invariance, parity, scores_from_logits
from textclf_export.tuning import tune_openvino, tune_session

logger = logging.getLogger(__name__)


@dataclass
class Reference:
    """PyTorch's logits on the test texts and the numbers each variant is compared with."""

    logits: np.ndarray
    scores: MetricScores


@dataclass
class BuildContext:
    source: builders.BuildSource
    onnx_dir: Path
    eval_data: EvalData
    reference: Reference
    has_cuda: bool


def builder_of(spec: VariantSpec) -> Callable[..., dict[str, Any]]:
    """The function a registry entry names: OpenVINO's builders in `openvino_ir`, ONNX Runtime's in `builders`."""
    module = openvino_ir if spec.engine == "openvino" else builders
    builder: Callable[..., dict[str, Any]] = getattr(module, spec.builder)
    return builder


def _build(spec: VariantSpec, ctx: BuildContext, out: Path, candidate: dict[str, Any]) -> dict[str, Any]:
    return builder_of(spec)(ctx.source, out, **candidate)


def _tune(spec: VariantSpec, ctx: BuildContext, folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    """The engine settings of a CPU variant, timed on this machine (recorded in params, applied via textclf.json)."""
    if spec.device != "cpu":
        return {}
    threads = default_intra_op_threads()
    texts = ctx.eval_data.calibration_texts
    if spec.engine == "openvino":
        precision = params.get("inference_precision", "f32")
        settings, params["session_tuning"] = tune_openvino(folder, texts, threads, precision)
        return settings
    disabled, params["session_tuning"] = tune_session(folder, texts, threads)
    return {DISABLED_OPTIMIZERS_KEY: disabled}


@dataclass
class Judged:
    """A built folder's verdict, the variant as judged, and its logits on the test texts (in their order)."""

    verdict: Verdict
    classifier: Classifier
    test_logits: np.ndarray


def _judge(spec: VariantSpec, ctx: BuildContext, folder: Path) -> Judged:
    """Run the gates on a built folder; the verdict is `passed` plus every failing gate as `reason`."""
    classifier = Classifier(folder, use_cuda=spec.device == "cuda")
    cfg = ctx.source.cfg
    texts = ctx.eval_data.test_texts
    n_parity = min(cfg.parity_samples, len(texts))
    max_diff = parity(classifier, texts[:n_parity], ctx.reference.logits[:n_parity])
    # Kept for the confidence fit's test report: one pass over the test texts serves the gate and the report.
    test_logits, _ = classifier.logits(texts, batch_size=32)
    scores = scores_from_logits(test_logits, ctx.eval_data.test_labels, classifier.threshold)
    delta = scores.gated - ctx.reference.scores.gated
    metric = "accuracy" if scores.micro_f1 is None else "micro-F1"
    n_invariance = min(cfg.invariance_samples or len(texts), len(texts))
    invariance = batch_invariance(classifier, texts[:n_invariance])

    limit: float | None = getattr(cfg, spec.parity_field) if spec.parity_field else None
    reasons = []
    if limit is not None and max_diff > limit:
        reasons.append(f"parity {max_diff:.2e} > {limit:.0e}")
    if delta < -cfg.max_accuracy_drop:
        reasons.append(
            f"{metric} {scores.gated:.4f} is {-delta * 100:.2f} pt below PyTorch "
            f"(limit {cfg.max_accuracy_drop * 100:.2f} pt)"
        )
    if invariance.flips > cfg.max_invariance_flips:
        reasons.append(f"{invariance.flips} label flips between alone and batched (limit {cfg.max_invariance_flips})")
    verdict = Verdict(
        passed=not reasons,
        reason="; ".join(reasons) if reasons else "passed every gate",
        parity_max_abs_diff=max_diff,
        parity_samples=n_parity,
        test_accuracy=scores.accuracy,
        test_macro_f1=scores.macro_f1,
        accuracy_delta=scores.accuracy - ctx.reference.scores.accuracy,
        test_micro_f1=scores.micro_f1,
        metric_delta=delta,
        batch_invariance=invariance,
    )
    return Judged(verdict, classifier, test_logits)


def build_and_judge(name: str, ctx: BuildContext, input_key: str) -> VariantRecord:
    """Try the variant's candidate settings in order; commit the first that passes to `onnx/<name>`, with its
    confidence fitted on the validation split (`textclf_export.calibrate`).

    A refused variant leaves no folder (and removes a stale one from an earlier export); its record carries
    the last attempt's verdict and no files.
    """
    spec = variant_spec(name)
    target = ctx.onnx_dir / name
    attempts: list[Attempt] = []
    candidates = spec.candidates
    if spec.device == "cuda" and not ctx.has_cuda:
        attempts.append(Attempt(passed=False, reason=f"{name} is judged on the CUDA execution provider; none here"))
        candidates = ()
    for index, candidate in enumerate(candidates):
        staging = ctx.source.work_dir / f"{name}-{index}"
        try:
            params = _build(spec, ctx, staging, candidate)
            # A first sidecar with the engine's defaults (and the build's precision), so tuning's probe loads right.
            first = {OPENVINO_PRECISION_KEY: params["inference_precision"]} if spec.engine == "openvino" else {}
            builders.write_sidecar(staging, name, ctx.source.max_seq_len, params, spec.engine, first)
            settings = _tune(spec, ctx, staging, params)
            builders.write_sidecar(staging, name, ctx.source.max_seq_len, params, spec.engine, settings)
            judged = _judge(spec, ctx, staging)
        except Exception as exc:  # a failed build refuses this candidate; the others still get their chance
            logger.warning("%s %s: build failed: %s", name, candidate, exc)
            attempts.append(Attempt(params=candidate, passed=False, reason=f"build failed: {exc}"))
            continue
        verdict = judged.verdict
        attempts.append(Attempt(params=params, **verdict.model_dump()))
        logger.info("%s %s: %s", name, candidate or "", verdict.reason)
        if verdict.passed:
            # Fitted before the folder is committed: a failed fit fails the export, never leaves a folder unrecorded.
            confidence = variant_confidence(name, judged.classifier, judged.test_logits, ctx.eval_data, ctx.source.cfg)
            replace_dir(staging, target)
            return VariantRecord(
                **verdict.model_dump(),
                params=params,
                files=file_entries(target),
                attempts=attempts,
                input_key=input_key,
                built_at=now_iso(),
                confidence=confidence,
            )
    shutil.rmtree(target, ignore_errors=True)
    return VariantRecord(
        **attempts[-1].model_dump(),
        files={},
        attempts=attempts,
        input_key=input_key,
        built_at=now_iso(),
    )
