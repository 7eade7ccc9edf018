"""After `textclf export` and `textclf report`: what they wrote, logged to the tracked run of the training.

`textclf train` records its trackers' runs in the manifest (`train.tracking`); here the CLI, which knows every
stage, reads the manifest and `results.json` through their typed records and logs them to those runs, so export and
the benchmarks stay free of any tracker. Nothing here fails a command: a tracker that cannot be reached is named
once in a warning and left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textclf.artifacts.manifest import read_manifest
from textclf.artifacts.records import load_report
from textclf.artifacts.schema import Manifest, VariantRecord
from textclf.config import Config
from textclf.errors import ArtifactError
from textclf.paths import MANIFEST_NAME, ONNX_DIR, REPORT_MD, RESULTS_JSON
from textclf_benchmarks.schema import Headline, Results
from textclf_train.trackers import TrackedRuns, open_runs

logger = logging.getLogger(__name__)


def gate_metrics(name: str, variant: VariantRecord) -> dict[str, float | None]:
    """One variant's gates and timing as `export/<variant>/<figure>` numbers (None: not measured)."""
    flips = variant.batch_invariance.flips if variant.batch_invariance else None
    figures = {
        "passed": 1.0 if variant.passed else 0.0,
        "parity_max_abs_diff": variant.parity_max_abs_diff,
        "test_accuracy": variant.test_accuracy,
        "accuracy_delta": variant.accuracy_delta,
        "metric_delta": variant.metric_delta,
        "batch_invariance_flips": flips,
        "latency_ms": variant.latency_ms,
        "batch32_ms_per_text": variant.batch32_ms_per_text,
        "bytes": variant.bytes or None,
    }
    return {f"export/{name}/{key}": value for key, value in figures.items()}


def log_export(cfg: Config) -> None:
    """Log every variant's gates, the serving choice, the manifest and (MLflow) the served variants' files to the
    training's tracked runs; nothing when the training tracked none or the export was of an outside checkpoint."""
    manifest = _manifest(cfg)
    if manifest is None or manifest.train is None or manifest.export is None or manifest.train.tracking is None:
        return
    export = manifest.export
    if not export.checkpoint.is_own:
        logger.info("tracking: the export was of %s, not the run's checkpoint; not logged", export.checkpoint.path)
        return
    with open_runs(cfg.run_dir, manifest.train.tracking, "export") as runs:
        if not runs:
            return
        for name, variant in export.variants.items():
            runs.log_metrics(gate_metrics(name, variant))
            runs.set_tags({f"export.{name}.passed": str(variant.passed), f"export.{name}.reason": variant.reason})
        runs.set_tags(
            {
                "export.serving_variant": export.serving_variant or "none",
                "export.serving_reason": export.serving_reason or "",
                # the serving variant, then any variant that takes the long texts
                "export.served_variants": ",".join(export.served_variants()) or "none",
            }
        )
        runs.log_files([cfg.run_dir / MANIFEST_NAME], "export")
        # The files a Bento would ship; the BentoML model store stays what serves them (docs/tracking.md).
        for name in export.served_variants():
            params = {"variant": name, "is_serving_variant": str(name == export.serving_variant), "run": cfg.run}
            files = sorted(export.variants[name].files)
            runs.log_model(f"{cfg.run}-{name}", cfg.run_dir / ONNX_DIR / name, files, params)
        _say_where(runs, "export")


def headline_figures(headline: Headline) -> tuple[dict[str, float | None], dict[str, str]]:
    """The headline as `report/<figure>` numbers and `report.<figure>` words (the targets stay in results.json)."""
    numbers: dict[str, float | None] = {}
    words: dict[str, str] = {}
    for key, value in headline.model_dump(exclude={"targets"}).items():
        if isinstance(value, str):
            words[f"report.{key}"] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers[f"report/{key}"] = value
    return numbers, words


def log_report(cfg: Config, out_dir: Path) -> None:
    """Log the report's headline figures and its files (report.md, results.json, the PNGs) to the training's
    tracked runs; nothing when the run's manifest records none."""
    manifest = _manifest(cfg)
    tracking = manifest.train.tracking if manifest and manifest.train else None
    if tracking is None:
        return
    results = load_report(out_dir / RESULTS_JSON, Results)
    with open_runs(cfg.run_dir, tracking, "report") as runs:
        if not runs:
            return
        numbers, words = headline_figures(results.headline)
        runs.log_metrics(numbers)
        runs.set_tags(words)
        files = [out_dir / REPORT_MD, out_dir / RESULTS_JSON, *(out_dir / name for name in results.plots)]
        runs.log_files(files, "report")
        _say_where(runs, "report")


def _manifest(cfg: Config) -> Manifest | None:
    # The stage itself has finished: a manifest this textclf cannot read stops its tracking, not the command.
    try:
        return read_manifest(cfg.run_dir)
    except ArtifactError as exc:
        logger.warning("tracking: nothing logged, the run's manifest cannot be read: %s", exc)
        return None


def _say_where(runs: TrackedRuns, stage: str) -> None:
    if runs:  # the writers that lasted to the end
        logger.info("tracking: %s logged to %s", stage, ", ".join(writer.tracker for writer in runs.writers))
