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
from export.gates import accuracy, batch_invariance, parity
from textclf.config import ExportConfig
from textclf.manifest import file_entries, now_iso, replace_dir
from textclf.runtime import Classifier

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
    accuracy: float
    macro_f1: float


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


def _judge(name: str, ctx: BuildContext, folder: Path) -> dict[str, Any]:
    """Run the gates on a built folder; the verdict is `passed` plus the first failing gate as `reason`."""
    classifier = Classifier(folder, use_cuda=name == "fp16")
    texts = ctx.eval_data.test_texts
    n_parity = min(ctx.cfg.parity_samples, len(texts))
    result: dict[str, Any] = {
        "parity_max_abs_diff": parity(classifier, texts[:n_parity], ctx.reference.logits[:n_parity]),
        "parity_samples": n_parity,
    }
    acc, f1 = accuracy(classifier, texts, ctx.eval_data.test_labels)
    result |= {"test_accuracy": acc, "test_macro_f1": f1, "accuracy_delta": acc - ctx.reference.accuracy}
    n_invariance = min(ctx.cfg.invariance_samples or len(texts), len(texts))
    result["batch_invariance"] = batch_invariance(classifier, texts[:n_invariance])

    limit = _max_parity(name, ctx.cfg)
    reasons = []
    if limit is not None and result["parity_max_abs_diff"] > limit:
        reasons.append(f"parity {result['parity_max_abs_diff']:.2e} > {limit:.0e}")
    if result["accuracy_delta"] < -ctx.cfg.max_accuracy_drop:
        reasons.append(
            f"accuracy {acc:.4f} is {-result['accuracy_delta'] * 100:.2f} pt below PyTorch "
            f"(limit {ctx.cfg.max_accuracy_drop * 100:.2f} pt)"
        )
    flips = result["batch_invariance"]["flips"]
    if flips > ctx.cfg.max_invariance_flips:
        reasons.append(f"{flips} label flips between alone and batched (limit {ctx.cfg.max_invariance_flips})")
    result["passed"] = not reasons
    result["reason"] = "; ".join(reasons) if reasons else "passed every gate"
    return result


def build_and_judge(name: str, ctx: BuildContext, input_key: str) -> dict[str, Any]:
    """Try the variant's candidate settings in order; commit the first that passes to `onnx/<name>`.

    A refused variant leaves no folder (and removes a stale one from an earlier export).
    """
    target = ctx.onnx_dir / name
    attempts: list[dict[str, Any]] = []
    candidates = _candidates(name)
    if name == "fp16" and not ctx.has_cuda:
        attempts.append({"passed": False, "reason": "fp16 is judged on the CUDA execution provider; none here"})
        candidates = ()
    for index, candidate in enumerate(candidates):
        staging = ctx.work_dir / f"{name}-{index}"
        try:
            params = _build(name, ctx, staging, candidate)
            builders.write_sidecar(staging, name, ctx.max_seq_len, params)
            verdict = _judge(name, ctx, staging)
        except Exception as exc:  # a failed build refuses this candidate; the others still get their chance
            logger.warning("%s %s: build failed: %s", name, candidate, exc)
            attempts.append({"params": candidate, "passed": False, "reason": f"build failed: {exc}"})
            continue
        attempts.append({"params": params, **verdict})
        logger.info("%s %s: %s", name, candidate or "", verdict["reason"])
        if verdict["passed"]:
            replace_dir(staging, target)
            return {
                **verdict,
                "params": params,
                "files": file_entries(target),
                "attempts": attempts,
                "input_key": input_key,
                "built_at": now_iso(),
            }
    shutil.rmtree(target, ignore_errors=True)
    last = attempts[-1]
    return {
        **{k: v for k, v in last.items() if k != "params"},
        "params": last.get("params", {}),
        "files": {},
        "attempts": attempts,
        "input_key": input_key,
        "built_at": now_iso(),
    }
