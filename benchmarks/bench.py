"""`textclf bench`: every engine on the same inputs in one process run, interleaved, with a GEMM roofline.

The engines: PyTorch (the reference), every exported variant that passed its gates, the serving variant once more on
one thread, and what the service runs (`Classifier.from_run`) loaded twice, `served` and `served-aa` (the envelope's
subject and its A/A control), all timed case by case in the one interleaved timer (`textclf.inference.timing`).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import timeit
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from textclf.artifacts.manifest import require_export
from textclf.artifacts.records import write_report
from textclf.artifacts.schema import ExportSection, VariantRecord
from textclf.hardware import usable_cores
from textclf.inference.engines import providers_for
from textclf.inference.runtime import Classifier
from textclf.inference.timing import round_median, summarize, time_interleaved
from textclf.inference.variants import VARIANTS, variants_on
from textclf.paths import BENCH_JSON, ONNX_DIR
from textclf_benchmarks.config import BenchConfig, BenchmarkConfig
from textclf_benchmarks.engines import Engine, RuntimeEngine, TorchEngine
from textclf_benchmarks.envelope import engine_label
from textclf_benchmarks.schema import (
    ONE_THREAD_SUFFIX,
    SERVED_AA_ENGINE,
    SERVED_ENGINE,
    BenchEngine,
    BenchReport,
    BenchRow,
    GemmRate,
    Measured,
    Roofline,
    RooflineCase,
)
from textclf_benchmarks.texts import TextCase, long_cases, read_eval_texts, real_cases

logger = logging.getLogger(__name__)

ROOFLINE_CASE = (32, 128)
Calls = dict[str, Callable[[], None]]  # one case's call per engine label


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def bert_flops(config: dict[str, Any], batch: int, seq_len: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of a BERT-style encoder + pooler.

    Per layer and sequence: Q, K, V and output projections 8·s·h², attention scores and context 4·s²·h,
    feed-forward 4·s·h·i. Embedding lookups and LayerNorm/softmax are ignored (not GEMM work).
    """
    hidden = int(config["hidden_size"])
    inner = int(config.get("intermediate_size", 4 * hidden))
    layers = int(config["num_hidden_layers"])
    per_layer = 8 * seq_len * hidden**2 + 4 * seq_len**2 * hidden + 4 * seq_len * hidden * inner
    pooler = 2 * hidden**2
    return float(batch * (layers * per_layer + pooler))


def gemm_rate(threads: int, size: int = 2048, repeats: int = 7) -> dict[str, float]:
    """fp32 FLOP/s of a size×size MatMul in onnxruntime with `threads` intra-op threads (median of repeats)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a, b, c = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "abc")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((size, size), dtype=np.float32) for name in ("a", "b")}
    session.run(None, feeds)  # warm-up
    median = float(np.median([timeit.timeit(lambda: session.run(None, feeds), number=1) for _ in range(repeats)]))
    return {"size": size, "threads": threads, "median_s": median, "flops_per_s": 2 * size**3 / median}


class _Engines:
    """The engines that load here, and a record per engine (size, accuracy, memory) or why it was left out."""

    def __init__(self) -> None:
        self.loaded: list[Engine] = []
        self.records: dict[str, BenchEngine] = {}

    def add(self, make: Callable[[], Engine], record: BenchEngine, threads: int) -> None:
        before = _rss_mb()
        try:
            engine = make()
        except Exception as exc:  # an engine that cannot load here is reported, not fatal
            logger.warning("left out %s: %s", record.label, exc)
            self.records[record.label] = record.model_copy(update={"loaded": False, "reason": str(exc)[:300]})
            return
        self.loaded.append(engine)
        runs = engine.classifier.engine.describe() if isinstance(engine, RuntimeEngine) else None
        update = {"loaded": True, "rss_load_mb": round(_rss_mb() - before, 1), "threads": threads, "runs": runs}
        self.records[engine.name] = record.model_copy(update=update)


def _load_engines(cfg: BenchmarkConfig, run_dir: Path, export: ExportSection, device: str, vocab: int) -> _Engines:
    import torch

    threads = usable_cores()
    torch.set_num_threads(threads)
    checkpoint = Path(export.checkpoint.path)
    checkpoint_bytes = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    engines = _Engines()
    cuda = device == "cuda"
    suffix = "-cuda" if cuda else ""
    torch_kinds = [(False, False), (True, False)] if cuda else [(False, False)]  # (fp16, compile)
    if cfg.bench.use_torch_compile:
        torch_kinds += [(fp16, True) for fp16, _ in torch_kinds]
    for fp16, compiled in torch_kinds:
        label = f"pytorch-{'fp16' if fp16 else 'fp32'}{'-compile' if compiled else ''}{suffix}"
        # fp16 PyTorch is not judged on the test set; eager and compiled fp32 are the reference itself.
        judged = {} if fp16 else {"test_accuracy": export.pytorch.test_accuracy, "accuracy_delta": 0.0}
        record = BenchEngine(label=label, kind="pytorch", bytes=checkpoint_bytes, loaded=False, **judged)
        make = partial(TorchEngine, checkpoint, export.max_seq_len, device, fp16, compiled, label)
        engines.add(make, record, threads)
    wanted = ("fp32", *variants_on("cuda")) if cuda else variants_on("cpu")
    for name in wanted if cuda else ():  # a GPU variant that will not run is reported with its reason
        variant = export.variants.get(name)
        if variant is None or not variant.passed:
            reason = "not exported (add it to export.variants)" if variant is None else variant.reason
            label = engine_label(name, suffix)
            engines.records[label] = BenchEngine(
                label=label, kind="onnxruntime", variant=name, bytes=0, loaded=False, reason=f"variant {name}: {reason}"
            )
    runs = [(name, engine_label(name, suffix), threads) for name in export.variants if name in wanted]
    if not cuda and threads > 1 and export.serving_variant:
        # The serving variant once more on one intra-op thread: what a worker of a multi-worker Bento gets.
        runs.append((export.serving_variant, engine_label(export.serving_variant, ONE_THREAD_SUFFIX), 1))
    # ONNX Runtime's pool threads spin or not as the service runs them (`serve.ort_spinning`, off by default), as in
    # export's timing: spinning threads of one engine take the cores from the next engine's call in an interleaving.
    spin = cfg.serve.ort_spinning or cuda
    for name, label, n in runs:
        variant = export.variants[name]
        if variant.passed:
            make = partial(_variant_engine, run_dir / ONNX_DIR / name, variant, label, n, vocab, spin, cuda)
            engines.add(make, _record(label, name, variant), n)
    if not cuda and export.serving_variant:
        serving = export.variants[export.serving_variant]
        for label in (SERVED_ENGINE, SERVED_AA_ENGINE):
            make = partial(_served_engine, run_dir, label, threads, vocab, spin)
            engines.add(make, _record(label, export.serving_variant, serving), threads)
    return engines


def _served_engine(run_dir: Path, label: str, threads: int, vocab: int, spin: bool) -> Engine:
    """What the service runs: the very object `Classifier.from_run` builds for it, on the sweep's threads."""
    return RuntimeEngine(Classifier.from_run(run_dir, intra_op_threads=threads, allow_spinning=spin), vocab, name=label)


def _variant_engine(
    folder: Path, variant: VariantRecord, label: str, threads: int, vocab: int, spin: bool, cuda: bool
) -> Engine:
    # Checked before loading: without the provider the session would quietly run on the CPU.
    if cuda and providers_for(use_cuda=True)[0] != "CUDAExecutionProvider":
        raise RuntimeError("this onnxruntime build has no CUDA execution provider (install onnxruntime-gpu)")
    classifier = Classifier(
        folder, expected_files=variant.files, intra_op_threads=threads, use_cuda=cuda, allow_spinning=spin
    )
    return RuntimeEngine(classifier, vocab, name=label, io_binding=cuda)


def _record(label: str, name: str, variant: VariantRecord) -> BenchEngine:
    kind = VARIANTS[name].engine if name in VARIANTS else "onnxruntime"
    judged = variant.model_dump(include={"bytes", "test_accuracy", "accuracy_delta"})
    return BenchEngine(label=label, kind=kind, variant=name, loaded=False, **judged)


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


def _cycler(calls: list[Callable[[], None]]) -> Callable[[], None]:
    """One call that runs the next of `calls` each time (successive real batches)."""
    turns = itertools.cycle(calls)
    return lambda: next(turns)()


def _time_case(calls: Calls, bench: BenchConfig, case: dict[str, Any]) -> list[BenchRow]:
    logger.info("case %s (%s): %d engines", case["case"], case["mode"], len(calls))
    samples = time_interleaved(_runnable(calls), bench.warmup_iters, bench.min_iters, bench.max_seconds_per_case)
    return [
        BenchRow.model_validate(
            {"engine": name, **case, **summarize(rounds, case["batch"]), "round_median_ms": round_median(rounds)}
        )
        for name, rounds in samples.items()
    ]


def _sweep(
    engines: list[Engine], cfg: BenchmarkConfig, text_cases: list[TextCase], max_positions: int
) -> list[BenchRow]:
    """Every synthetic case on the engines alone, then every real-text case on the whole path and on the engine."""
    from rich.progress import Progress

    bench = cfg.bench
    shapes = [(b, s) for b in bench.batch_sizes for s in bench.seq_lens if s <= max_positions]
    rows: list[BenchRow] = []
    with Progress() as progress:
        task = progress.add_task("benchmark cases", total=len(shapes) + 2 * len(text_cases))
        for batch, seq_len in shapes:
            calls: Calls = {e.name: partial(e.run_prepared, e.fixed(batch, seq_len)) for e in engines}
            case = {"case": f"b{batch}-s{seq_len}", "mode": "session", "batch": batch, "seq_len": seq_len}
            rows += _time_case(calls, bench, case)
            progress.advance(task)
        for name, batch, ordered, mean_words in text_cases:
            chunks = [ordered[i : i + batch] for i in range(0, len(ordered) - batch + 1, batch)]
            serving: Calls = {e.name: _cycler([partial(e.run_texts, chunk) for chunk in chunks]) for e in engines}
            session: Calls = {  # PyTorch's real-text cost is its whole path only
                e.name: _cycler([partial(e.run_prepared, e.prepare_texts(chunk)) for chunk in chunks])
                for e in engines
                if e.kind != "pytorch"
            }
            for mode, calls in (("serving", serving), ("session", session)):
                case = {"case": name, "mode": mode, "batch": batch, "seq_len": None, "mean_words": mean_words}
                rows += _time_case(calls, bench, case)
                progress.advance(task)
    return rows


def run(cfg: BenchmarkConfig, run_dir: Path, *, device: str = "cpu", out_dir: Path | None = None) -> Path:
    """Measure every engine and write `reports/<run>/bench.json` (`bench-cuda.json` for `device="cuda"`): its path."""
    started = time.perf_counter()
    export = require_export(run_dir)
    out_dir = out_dir or cfg.reports_root / cfg.run
    path = out_dir / (BENCH_JSON if device == "cpu" else f"bench-{device}.json")
    texts = read_eval_texts(run_dir, export)[: cfg.bench.real_texts]
    config = cfg.bench.model_dump(mode="json")
    report = BenchReport(**Measured.now(cfg.run), device=device, config=config, ran=False)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            report.reason = "no CUDA device is visible to torch on this machine"
            return write_report(path, report)
        report.machine.gpu = torch.cuda.get_device_name(0)
    checkpoint_config = json.loads((Path(export.checkpoint.path) / "config.json").read_text())
    engines = _load_engines(cfg, run_dir, export, device, int(checkpoint_config["vocab_size"]))
    tokenizer_dir = run_dir / ONNX_DIR / (export.serving_variant or "fp32")
    long_text_cases, report.long_texts = long_cases(tokenizer_dir, export.max_seq_len)
    text_cases = real_cases(texts, tokenizer_dir) + long_text_cases
    max_positions = int(checkpoint_config.get("max_position_embeddings", 512))
    report.rows = _sweep(engines.loaded, cfg, text_cases, max_positions)
    report.engines, report.ran = engines.records, True
    batch, seq_len = ROOFLINE_CASE
    flops = bert_flops(checkpoint_config, batch, seq_len)
    gemm = GemmRate(**gemm_rate(usable_cores()))
    report.roofline = Roofline(gemm=gemm, case=RooflineCase(batch=batch, seq_len=seq_len), model_flops=flops)
    report.served_engine = SERVED_ENGINE if SERVED_ENGINE in {e.name for e in engines.loaded} else None
    report.real_texts, report.wall_time_s = len(texts), round(time.perf_counter() - started, 1)
    return write_report(path, report)
