"""Build one variant, judge it, and commit its folder only when it passes."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export import builders
from export.evaldata import EvalData
from export.gates import TestScores, batch_invariance, parity, test_scores
from textclf.config import ExportConfig
from textclf.manifest import file_entries, now_iso, replace_dir
from textclf.runtime import Classifier
from textclf.schema import Attempt, VariantRecord, Verdict

logger = logging.getLogger(__name__)

# Dynamic int8 settings tried in order until one passes: the preset's default first, then reduce_range (which
# avoids u8s8 saturation on CPUs without VNNI), then per-tensor weights.
DYNAMIC_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"per_channel": True, "reduce_range": False},
    {"per_channel": True, "reduce_range": True},
    {"per_channel": False, "reduce_range": False},
)
# Static int8: MatMuls only first (residual Adds feed LayerNorm and are the usual accuracy loss), then both.
STATIC_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"per_channel": True, "operators": ["MatMul"]},
    {"per_channel": False, "operators": ["MatMul"]},
    {"per_channel": True, "operators": ["MatMul", "Add"]},
)


@dataclass
class Reference:
    """PyTorch's logits on the test texts and the numbers each variant is compared with."""

    logits: np.ndarray
    scores: TestScores


@dataclass
class BuildContext:
    fp32_source: Path
    work_dir: Path
    onnx_dir: Path
    max_seq_len: int
    eval_data: EvalData
    reference: Reference
    cfg: ExportConfig
    has_cuda: bool


def _build(name: str, ctx: BuildContext, out: Path, candidate: dict[str, Any]) -> dict[str, Any]:
    if name == "fp32":
        shutil.copytree(ctx.fp32_source, out, dirs_exist_ok=True)
        return {"exporter": "optimum.exporters.onnx.main_export"}
    if name == "optimized":
        return builders.build_optimized(ctx.fp32_source, out, ctx.cfg.optimization_level)
    if name == "fp16":
        return builders.build_optimized(ctx.fp32_source, out, ctx.cfg.optimization_level, for_gpu=True, fp16=True)
    if name == "int8-dynamic":
        return builders.build_int8_dynamic(ctx.fp32_source, out, **candidate)
    if name == "int8-static":
        return builders.build_int8_static(
            ctx.fp32_source,
            out,
            ctx.eval_data.calibration_texts,
            ctx.max_seq_len,
            ctx.cfg.calibration_method,
            work_dir=ctx.work_dir,
            **candidate,
        )
    raise ValueError(f"unknown variant {name}")


def _candidates(name: str) -> tuple[dict[str, Any], ...]:
    return {"int8-dynamic": DYNAMIC_CANDIDATES, "int8-static": STATIC_CANDIDATES}.get(name, ({},))


def _max_parity(name: str, cfg: ExportConfig) -> float | None:
    return {"fp32": cfg.max_fp32_parity, "optimized": cfg.max_optimized_parity}.get(name)


def _judge(name: str, ctx: BuildContext, folder: Path) -> Verdict:
    """Run the gates on a built folder; the verdict is `passed` plus every failing gate as `reason`."""
    classifier = Classifier(folder, use_cuda=name == "fp16")
    texts = ctx.eval_data.test_texts
    n_parity = min(ctx.cfg.parity_samples, len(texts))
    max_diff = parity(classifier, texts[:n_parity], ctx.reference.logits[:n_parity])
    scores = test_scores(classifier, texts, ctx.eval_data.test_labels)
    delta = scores.gated - ctx.reference.scores.gated
    metric = "accuracy" if scores.micro_f1 is None else "micro-F1"
    n_invariance = min(ctx.cfg.invariance_samples or len(texts), len(texts))
    invariance = batch_invariance(classifier, texts[:n_invariance])

    limit = _max_parity(name, ctx.cfg)
    reasons = []
    if limit is not None and max_diff > limit:
        reasons.append(f"parity {max_diff:.2e} > {limit:.0e}")
    if delta < -ctx.cfg.max_accuracy_drop:
        reasons.append(
            f"{metric} {scores.gated:.4f} is {-delta * 100:.2f} pt below PyTorch "
            f"(limit {ctx.cfg.max_accuracy_drop * 100:.2f} pt)"
        )
    if invariance.flips > ctx.cfg.max_invariance_flips:
        reasons.append(
            f"{invariance.flips} label flips between alone and batched (limit {ctx.cfg.max_invariance_flips})"
        )
    return Verdict(
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


def build_and_judge(name: str, ctx: BuildContext, input_key: str) -> VariantRecord:
    """Try the variant's candidate settings in order; commit the first that passes to `onnx/<name>`.

    A refused variant leaves no folder (and removes a stale one from an earlier export); its record carries
    the last attempt's verdict and no files.
    """
    target = ctx.onnx_dir / name
    attempts: list[Attempt] = []
    candidates = _candidates(name)
    if name == "fp16" and not ctx.has_cuda:
        attempts.append(Attempt(passed=False, reason="fp16 is judged on the CUDA execution provider; none here"))
        candidates = ()
    for index, candidate in enumerate(candidates):
        staging = ctx.work_dir / f"{name}-{index}"
        try:
            params = _build(name, ctx, staging, candidate)
            builders.write_sidecar(staging, name, ctx.max_seq_len, params)
            verdict = _judge(name, ctx, staging)
        except Exception as exc:  # a failed build refuses this candidate; the others still get their chance
            logger.warning("%s %s: build failed: %s", name, candidate, exc)
            attempts.append(Attempt(params=candidate, passed=False, reason=f"build failed: {exc}"))
            continue
        attempts.append(Attempt(params=params, **verdict.model_dump()))
        logger.info("%s %s: %s", name, candidate or "", verdict.reason)
        if verdict.passed:
            replace_dir(staging, target)
            return VariantRecord(
                **verdict.model_dump(),
                params=params,
                files=file_entries(target),
                attempts=attempts,
                input_key=input_key,
                built_at=now_iso(),
            )
    shutil.rmtree(target, ignore_errors=True)
    return VariantRecord(
        **attempts[-1].model_dump(),
        files={},
        attempts=attempts,
        input_key=input_key,
        built_at=now_iso(),
    )
