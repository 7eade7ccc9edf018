"""`textclf bench`: every engine on the same inputs in one process run, interleaved, with a GEMM roofline.

The engines: PyTorch (the reference), every exported variant that passed its gates (ONNX Runtime and OpenVINO), the
serving variant once more on one thread, and `served`, what the service runs where export recorded a long-call
route (the serving variant for short calls, the route's variant for long ones).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from textclf.artifacts.files import now_iso
from textclf.artifacts.manifest import package_versions, require_export
from textclf.artifacts.records import Machine, write_report
from textclf.artifacts.schema import ExportSection, ServingRoute, VariantRecord
from textclf.hardware import machine_info, usable_cores
from textclf.inference.engines import RoutedEngine, providers_for
from textclf.inference.runtime import Classifier
from textclf.inference.timing import summarize, time_interleaved
from textclf.inference.variants import VARIANTS, variants_on
from textclf.paths import BENCH_JSON, ONNX_DIR
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.engines import Engine, RuntimeEngine, TorchEngine
from textclf_benchmarks.envelope import engine_label, served_label
from textclf_benchmarks.op_profile import profile_engines
from textclf_benchmarks.roofline import bert_flops, gemm_rate
from textclf_benchmarks.schema import (
    ONE_THREAD_SUFFIX,
    SERVED_ENGINE,
    BenchEngine,
    BenchReport,
    BenchRow,
    GemmRate,
    Roofline,
    RooflineCase,
)
from textclf_benchmarks.texts import long_cases, read_eval_texts, real_cases

logger = logging.getLogger(__name__)

ROOFLINE_CASE = (32, 128)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def _load_engines(
    cfg: BenchmarkConfig, run_dir: Path, export: ExportSection, device: str
) -> tuple[list[Engine], dict[str, BenchEngine]]:
    """Engines that load here, and a record per engine (size, accuracy, memory) or why it was left out."""
    import torch

    threads = usable_cores()
    torch.set_num_threads(threads)
    checkpoint = Path(export.checkpoint.path)
    config = json.loads((checkpoint / "config.json").read_text())
    vocab = int(config["vocab_size"])
    checkpoint_bytes = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    engines: list[Engine] = []
    records: dict[str, BenchEngine] = {}

    def add(make: Callable[[], Engine], record: BenchEngine, engine_threads: int = threads) -> None:
        before = _rss_mb()
        try:
            engine = make()
        except Exception as exc:  # an engine that cannot load here is reported, not fatal
            logger.warning("left out: %s", exc)
            records[record.label] = record.model_copy(update={"loaded": False, "reason": str(exc)[:300]})
            return
        engines.append(engine)
        records[engine.name] = record.model_copy(
            update={"loaded": True, "rss_load_mb": round(_rss_mb() - before, 1), "threads": engine_threads}
        )

    def torch_record(label: str, *, is_judged: bool = True) -> BenchEngine:
        # fp16 PyTorch is not judged on the test set; eager and compiled fp32 are the reference itself.
        accuracy = export.pytorch.test_accuracy if is_judged else None
        return BenchEngine(
            label=label,
            kind="pytorch",
            bytes=checkpoint_bytes,
            test_accuracy=accuracy,
            accuracy_delta=0.0 if is_judged else None,
            loaded=False,
        )

    cuda = device == "cuda"
    suffix = "-cuda" if cuda else ""
    max_seq_len = export.max_seq_len
    add(lambda: TorchEngine(checkpoint, max_seq_len, device=device), torch_record(f"pytorch-fp32{suffix}"))
    if cuda:
        add(
            lambda: TorchEngine(checkpoint, max_seq_len, device=device, fp16=True),
            torch_record("pytorch-fp16-cuda", is_judged=False),
        )
    if cfg.bench.use_torch_compile:
        add(
            lambda: TorchEngine(checkpoint, max_seq_len, device=device, compile=True),
            torch_record(f"pytorch-fp32-compile{suffix}"),
        )
        if cuda:
            add(
                lambda: TorchEngine(checkpoint, max_seq_len, device=device, fp16=True, compile=True),
                torch_record("pytorch-fp16-compile-cuda", is_judged=False),
            )
    wanted = ("fp32", *variants_on("cuda")) if cuda else variants_on("cpu")
    if cuda:  # a GPU variant that will not run is reported with its reason, never silently missing
        for gpu_variant in wanted:
            record = export.variants.get(gpu_variant)
            if record is None or not record.passed:
                reason = "not exported (add it to export.variants)" if record is None else record.reason
                records[f"ort-{gpu_variant}-cuda"] = BenchEngine(
                    label=f"ort-{gpu_variant}-cuda",
                    kind="onnxruntime",
                    variant=gpu_variant,
                    bytes=record.bytes if record else 0,
                    loaded=False,
                    reason=f"variant {gpu_variant}: {reason}",
                )
    variant_engines = [(name, engine_label(name, suffix), threads) for name in export.variants if name in wanted]
    # ONNX Runtime's pool threads spin or not as the service runs them (`serve.ort_spinning`, off by default), as in
    # export's timing: spinning threads of one engine took the cores from the next engine's call in an interleaved
    # timing (openvino-int8 at b1 x 32: 4.5 / 14.5 ms beside spinning ORT sessions, 2.8 ms without; export/routing.py).
    spin = cfg.serve.ort_spinning
    if not cuda and threads > 1 and export.serving_variant:
        # The serving variant once more on one intra-op thread: what a worker of a multi-worker Bento gets.
        variant_engines.append((export.serving_variant, engine_label(export.serving_variant, ONE_THREAD_SUFFIX), 1))
    for name, label, engine_threads in variant_engines:
        variant = export.variants[name]
        if not variant.passed:
            continue

        def make(
            folder: Path = run_dir / ONNX_DIR / name,
            variant: VariantRecord = variant,
            label: str = label,
            n: int = engine_threads,
        ) -> Engine:
            # Checked before loading: without the provider the session would quietly run on the CPU.
            if cuda and providers_for(use_cuda=True)[0] != "CUDAExecutionProvider":
                raise RuntimeError("this onnxruntime build has no CUDA execution provider (install onnxruntime-gpu)")
            classifier = Classifier(
                folder, expected_files=variant.files, intra_op_threads=n, use_cuda=cuda, allow_spinning=spin or cuda
            )
            return RuntimeEngine(classifier, vocab, name=label, io_binding=cuda)

        add(make, _variant_record(label, name, variant), engine_threads)
    route = export.serving_route
    if not cuda and route is not None and export.serving_variant:
        # What the service runs: Classifier.from_run with export's route, the very object the service builds.
        add(
            lambda: RuntimeEngine(
                Classifier.from_run(run_dir, intra_op_threads=threads, allow_spinning=spin), vocab, name=SERVED_ENGINE
            ),
            _served_record(export, export.serving_variant, route),
        )
    return engines, records


def _variant_record(label: str, name: str, variant: VariantRecord) -> BenchEngine:
    spec = VARIANTS.get(name)
    return BenchEngine(
        label=label,
        kind=spec.engine if spec else "onnxruntime",
        variant=name,
        bytes=variant.bytes,
        test_accuracy=variant.test_accuracy,
        accuracy_delta=variant.accuracy_delta,
        loaded=False,
    )


def _served_record(export: ExportSection, serving: str, route: ServingRoute) -> BenchEngine:
    """The served pair's record: both variants' bytes, and the lower accuracy of the two (each passed its gates;
    which one answers depends on the call's size)."""
    short, long = export.variants[serving], export.variants.get(route.variant)
    parts = [short] if long is None else [short, long]
    worst = min(parts, key=lambda v: v.accuracy_delta if v.accuracy_delta is not None else 0.0)
    spec = VARIANTS.get(serving)
    return BenchEngine(
        label=SERVED_ENGINE,
        kind=spec.engine if spec else "onnxruntime",
        variant=serving,
        long_variant=route.variant,
        max_short_tokens=route.max_short_tokens,
        max_short_length=route.max_short_length,
        bytes=sum(v.bytes for v in parts),
        test_accuracy=worst.test_accuracy,
        accuracy_delta=worst.accuracy_delta,
        loaded=False,
    )


def _runnable(calls: Mapping[str, Callable[[], None]]) -> dict[str, Callable[[], None]]:
    """The calls that run once without error; an engine that cannot run a case is left out of it
    (torch.compile can fail on some shapes) with a warning."""
    working = {}
    for name, call in calls.items():
        try:
            call()
        except Exception as exc:
            logger.warning("%s cannot run this case: %s", name, str(exc)[:200])
            continue
        working[name] = call
    return working


def _cases(cfg: BenchmarkConfig, max_positions: int) -> list[tuple[int, int]]:
    return [(b, s) for b in cfg.bench.batch_sizes for s in cfg.bench.seq_lens if s <= max_positions]


def run(cfg: BenchmarkConfig, run_dir: Path, *, device: str = "cpu", out_dir: Path | None = None) -> Path:
    """Measure every engine and write `reports/<run>/bench.json`.

    Returns:
        The path of the JSON file written.
    """
    started = time.perf_counter()
    export = require_export(run_dir)
    out_dir = out_dir or cfg.reports_root / cfg.run
    path = out_dir / (BENCH_JSON if device == "cpu" else f"bench-{device}.json")
    texts = read_eval_texts(run_dir, export)[: cfg.bench.real_texts]
    report = BenchReport(
        created_at=now_iso(),
        run=cfg.run,
        device=device,
        machine=Machine.model_validate(machine_info()),
        versions=package_versions(),
        config=cfg.bench.model_dump(mode="json"),
        ran=False,
    )
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            report.reason = "no CUDA device is visible to torch on this machine"
            return write_report(path, report)
        report.machine.gpu = torch.cuda.get_device_name(0)
    engines, records = _load_engines(cfg, run_dir, export, device)
    served = next((e for e in engines if e.name == SERVED_ENGINE), None)
    checkpoint_config = json.loads((Path(export.checkpoint.path) / "config.json").read_text())
    rows: list[BenchRow] = []
    bench = cfg.bench
    from rich.progress import Progress

    cases = _cases(cfg, int(checkpoint_config.get("max_position_embeddings", 512)))
    tokenizer_dir = run_dir / ONNX_DIR / (export.serving_variant or "fp32")
    text_cases = real_cases(texts, tokenizer_dir)
    long_text_cases, report.long_texts = long_cases(tokenizer_dir, export.max_seq_len)
    text_cases += long_text_cases
    with Progress() as progress:
        task = progress.add_task("benchmark cases", total=len(cases) + 2 * len(text_cases))
        for batch, seq_len in cases:
            calls: dict[str, Callable[[], None]] = {
                e.name: partial(e.run_prepared, e.fixed(batch, seq_len)) for e in engines
            }
            _collect(
                rows,
                _runnable(calls),
                bench,
                {"case": f"b{batch}-s{seq_len}", "mode": "session", "batch": batch, "seq_len": seq_len},
                served,
            )
            progress.advance(task)
        for case, batch, ordered, mean_words in text_cases:
            chunks = [ordered[i : i + batch] for i in range(0, len(ordered) - batch + 1, batch)]
            for mode in ("serving", "session"):
                calls = {}
                for engine in engines:
                    if mode == "serving":
                        calls[engine.name] = _cycler([partial(engine.run_texts, chunk) for chunk in chunks])
                    elif engine.kind != "pytorch":  # PyTorch's real-text cost is its whole path only
                        prepared = [engine.prepare_texts(chunk) for chunk in chunks]
                        calls[engine.name] = _cycler([partial(engine.run_prepared, p) for p in prepared])
                _collect(
                    rows,
                    _runnable(calls),
                    bench,
                    {
                        "case": case,
                        "mode": mode,
                        "batch": batch,
                        "seq_len": None,
                        "mean_words": mean_words,
                    },
                    served,
                )
                progress.advance(task)

    report.ran = True
    report.engines = records
    report.rows = rows
    report.roofline = Roofline(
        gemm=GemmRate(**gemm_rate(usable_cores())),
        case=RooflineCase(batch=ROOFLINE_CASE[0], seq_len=ROOFLINE_CASE[1]),
        model_flops=bert_flops(checkpoint_config, *ROOFLINE_CASE),
    )
    if device == "cpu":
        report.op_profiles = profile_engines(engines, _profiled_variants(export), ROOFLINE_CASE)
        report.served_engine = served_label(export)
        report.serving_route = export.serving_route
        report.shape_timings = export.shape_timings
        report.plans = export.plans
    report.real_texts = len(texts)
    report.wall_time_s = round(time.perf_counter() - started, 1)
    return write_report(path, report)


def _profiled_variants(export: ExportSection) -> set[str]:
    """fp32 (the reference), the serving variant, the route's and OpenVINO's int8 where they passed."""
    wanted = {"fp32", export.serving_variant, "openvino-int8"}
    if export.serving_route is not None:
        wanted.add(export.serving_route.variant)
    return {name for name in wanted if name and name in export.variants and export.variants[name].passed}


def _cycler(calls: list[Callable[[], None]]) -> Callable[[], None]:
    """One call that runs the next of `calls` each time (successive real batches)."""
    state = {"i": 0}

    def call() -> None:
        calls[state["i"] % len(calls)]()
        state["i"] += 1

    return call


def _collect(
    rows: list[BenchRow],
    calls: dict[str, Callable[[], None]],
    bench: Any,
    case: dict[str, Any],
    served: Engine | None = None,
) -> None:
    logger.info("case %s (%s): %d engines", case["case"], case["mode"], len(calls))
    _served_calls(served)  # the calls of the case alone (and of its check in `_runnable`)
    samples = time_interleaved(calls, bench.warmup_iters, bench.min_iters, bench.max_seconds_per_case)
    ran_on = _served_calls(served)
    for name, values in samples.items():
        counts = {"ran_on": ran_on} if served is not None and name == served.name else {}
        rows.append(BenchRow.model_validate({"engine": name, **case, **summarize(values, case["batch"]), **counts}))


def _served_calls(served: Engine | None) -> dict[str, int] | None:
    """The calls each engine of the served pair ran since the last look, by sweep label (a fresh count after)."""
    if not isinstance(served, RuntimeEngine):
        return None
    counts: dict[str, int] = {}
    for engine in served.classifier.engines:
        if isinstance(engine, RoutedEngine):
            for variant, calls in engine.take_calls().items():
                counts[engine_label(variant)] = counts.get(engine_label(variant), 0) + calls
    return counts or None
