"""The benchmark reports' schema: `reports/<run>/{bench,load,bulk,explain,drift,results}.json`, declared once as
pydantic models on the manifest's strict record base (`textclf.artifacts.records`). A field newer than a file loads
with its default; fields older runs wrote (the long-call route's records, the soak) load as plain data: every
committed report renders.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from textclf.artifacts.confidence import ConfidenceRecord
from textclf.artifacts.drift_reference import DriftReferenceRecord
from textclf.artifacts.files import now_iso
from textclf.artifacts.manifest import package_versions
from textclf.artifacts.records import SCHEMA_VERSION, Machine, Record
from textclf.hardware import machine_info

EngineKind = Literal["pytorch", "onnxruntime", "openvino"]
Mode = Literal["session", "serving"]  # the engine alone on prepared inputs, or the whole path from texts
SERVED_ENGINE = "served"  # what the service runs: `Classifier.from_run(run_dir)`
SERVED_AA_ENGINE = "served-aa"  # the same, loaded a second time: the A/A control (`textclf_benchmarks.envelope`)
ONE_THREAD_SUFFIX = "-1thread"  # the serving variant once more on one thread (a multi-worker Bento's worker)
LONG_SUFFIX = "-long"  # the long-text load phase: "32-long"
PROTOCOL_APIS = ("v2", "hf")  # the Bento's other protocols' load phases ("32-v2", "32-hf"), by locustfile shape
Legacy = Any  # what older runs recorded (export's long-call route before issue 35, the soak): read, never written
BULK_JSON, EXPLAIN_JSON, DRIFT_JSON = "bulk.json", "explain.json", "drift.json"  # beside textclf.paths' BENCH_JSON


class Measured(Record):
    """What every measurement file opens with: when, for which run, on what machine, with which packages."""

    schema_version: Literal[1] = SCHEMA_VERSION
    created_at: str
    run: str
    machine: Machine
    versions: dict[str, str]

    @staticmethod
    def now(run: str) -> dict[str, Any]:
        """Those fields for a file measured now, on this machine."""
        machine = Machine.model_validate(machine_info())
        return {"created_at": now_iso(), "run": run, "machine": machine, "versions": package_versions()}


class BenchEngine(Record):
    """One engine of the sweep: what it is, its size and accuracy, or why it was left out."""

    label: str
    kind: EngineKind
    variant: str | None = None
    runs: str | None = Field(None, description="the engine as it describes itself (engine, threads, settings)")
    bytes: int
    test_accuracy: float | None = None
    accuracy_delta: float | None = None
    loaded: bool
    rss_load_mb: float | None = None
    reason: str | None = None
    threads: int | None = None  # intra-op threads (ORT, OpenVINO) or torch threads it ran with
    long_variant: Legacy = None
    max_short_tokens: Legacy = None
    max_short_length: Legacy = None


class BenchRow(Record):
    """One engine on one case: synthetic (`b8-s128`, seq_len set) or real texts (`real-b32`, seq_len None)."""

    engine: str
    case: str
    mode: Mode
    batch: int
    seq_len: int | None
    mean_words: float | None = None
    iters: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    seq_per_s: float
    round_median_ms: float | None = Field(
        None, description="the case's time: median over the interleaved rounds of each round's median"
    )
    round_best_ms: float | None = Field(None, description="lowest over the rounds of the round's median")
    ran_on: Legacy = None


class GemmRate(Record):
    size: int
    threads: int
    median_s: float
    flops_per_s: float


class RooflineCase(Record):
    batch: int
    seq_len: int


class Roofline(Record):
    gemm: GemmRate
    case: RooflineCase
    model_flops: float


class LongTexts(Record):
    """The long texts of the sweep's cases (`long-b1`, `long-b8`: the speeches) or of the load's long-text phase
    (speech excerpts, one a request), or why they did not run."""

    ran: bool
    reason: str | None = None
    source: str | None = None
    texts: int | None = None
    mean_words: float | None = None
    min_tokens: int | None = Field(None, description="load phase: the model's tokenizer, special tokens included")
    max_tokens: int | None = None
    mean_tokens: float | None = Field(None, description="the sweep: after the cut; the load phase: before")
    max_seq_len: int | None = Field(None, description="tokens every engine or server cuts each text at")
    truncated: int | None = Field(None, description="texts longer than max_seq_len tokens")


class BenchReport(Measured):
    """`reports/<run>/bench.json` (and `bench-cuda.json`): the engine sweep."""

    device: str
    config: dict[str, Any]
    ran: bool
    reason: str | None = None
    engines: dict[str, BenchEngine] = Field(default_factory=dict)
    rows: list[BenchRow] = Field(default_factory=list)
    roofline: Roofline | None = None
    op_profiles: dict[str, Legacy] = Field(default_factory=dict)
    real_texts: int | None = None
    long_texts: LongTexts | None = None
    served_engine: str | None = Field(None, description="the label of what the service runs")
    serving_route: Legacy = None
    shape_timings: list[Legacy] = Field(default_factory=list)
    plans: list[Legacy] = Field(default_factory=list)
    wall_time_s: float | None = None


class LoadPhase(Record):
    """One locust phase against one server (closed loop, `users` concurrent users)."""

    users: int
    seconds: float
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s_per_request: float | None = Field(None, description="server CPU seconds per request")
    engine_busy: float | None = Field(None, description="fraction of the phase the engine was running")


class ServerRecord(Record):
    """One server under load; `results` is keyed by phase: "1", "8", "32", "1-after-32", ..., "32-long"."""

    what: str
    results: dict[str, LoadPhase] = Field(default_factory=dict)
    ran: bool
    reason: str | None = None
    settings: dict[str, Any] | None = None
    truncation: str | None = Field(None, description="where and how this server cuts a text over max_seq_len tokens")
    model: dict[str, Any] | None = Field(None, description="a Bento's own `GET /model` answer: what it runs")

    def long_phase(self) -> tuple[str, LoadPhase] | None:
        """The long-text phase (`32-long`) and its name, where this server ran one."""
        if not self.ran:
            return None
        return next(((name, p) for name, p in self.results.items() if name.endswith(LONG_SUFFIX)), None)


class LoadReport(Measured):
    """`reports/<run>/load.json`: HTTP load on each server."""

    pinning: str
    request: str
    servers: dict[str, ServerRecord]
    long_texts: LongTexts | None = Field(None, description="the long-text phase's texts (None: no such phase)")
    soak: Legacy = Field(None, description="a run before the soak was retired: its long single-server load")
    wall_time_s: float | None = None


class BulkRun(Record):
    engine: str = Field(description="local, or ray with its layout")
    nodes: int
    actors: int
    cpus_per_actor: int
    rows: int
    seconds: float = Field(description="the job's seconds, loading the model included on both engines")
    texts_per_s: float
    peak_actor_rss_mb: float | None = None
    load_seconds: float | None = Field(None, description="local: loading the model, within `seconds`")
    warmup_seconds: float | None = Field(None, description="a `ray start` cluster: its first, untimed job")


class BulkReport(Measured):
    """`reports/<run>/bulk.json`."""

    rows: int
    runs: dict[str, BulkRun]
    bulk_ray_vs_local: float | None = None
    bulk_ray_scaling_2_nodes: float | None = None


class DeletionGap(Record):
    """The deletion gap at k over the measured texts (`textclf_benchmarks.explain.deletion_gap`), in log-odds."""

    mean: float = Field(description="mean over texts of (top-k drop − mean random-k drop)")
    low: float = Field(description="the paired-bootstrap interval's lower end")
    high: float
    mean_top_drop: float = Field(description="mean drop in the label's log-odds with its top-k words deleted")
    mean_random_drop: float = Field(description="the same with k random explained words (mean over draws, texts)")
    texts: int
    skipped: int = Field(description="texts with no predicted label or at most k explained words")
    k: int
    draws: int


class ExplainCost(Record):
    """An explained request against a plain one, one request at a time through a served Bento: client latency."""

    ran: bool
    reason: str | None = None
    server: str | None = Field(None, description="what served (`textclf_benchmarks.servers`)")
    model: dict[str, Any] | None = Field(None, description="the Bento's own `GET /model` answer")
    texts: int = 0
    rounds: int = 0
    top_k_words: int | None = None
    mean_explained_words: float | None = Field(None, description="words the server explained per text (mean)")
    plain_p50_ms: float | None = None
    explained_p50_ms: float | None = None
    plain_aa_p50_ms: float | None = Field(None, description="the same plain request again: the A/A control")
    ratio: float | None = Field(None, description="explained_p50_ms ÷ plain_p50_ms")
    aa_ratio: float | None = Field(None, description="plain_aa_p50_ms ÷ plain_p50_ms: the run's noise floor")


class ExplainReport(Measured):
    """`reports/<run>/explain.json`: `textclf bench-explain`."""

    variant: str
    engine: str
    max_seq_len: int
    max_explain_words: int
    deletion_gap: DeletionGap
    cost: ExplainCost


class DriftStream(Record):
    """One stream posted to the served Bento after a full window of test texts (`textclf_benchmarks.drift`)."""

    name: str
    source: str
    texts: int
    alarm_before: bool = Field(description="the alarm after the window of test texts that precedes the stream")
    alarm_after_texts: int | None = Field(None, description="stream texts sent when GET /monitor first alarmed")
    fired_after_texts: dict[str, int] = Field(description="per signal that fired: texts sent when it first passed 1")
    scores: dict[str, float | None] = Field(description="per signal: its score after the stream's last text")
    estimated_accuracy: list[float] = Field(description="mean served confidence per chunk of chunk_texts texts")
    measured_accuracy: list[float] | None = Field(None, description="accuracy per chunk (labelled streams only)")


class DriftCost(Record):
    """The monitoring path's CPU per answered text against the engine's time per text at b1, in-process."""

    texts: int
    observe_us: float = Field(description="`Monitoring.observe`, thread CPU per text (one text per call)")
    background_us: float = Field(description="its thread's share per text: the collected rows' write")
    evaluation_ms: float = Field(description="one drift evaluation, thread CPU (at most one a second)")
    engine_ms: float = Field(description="median wall time per text at b1 (`Classifier.infer_encoded`)")
    ratio: float = Field(description="(observe + background + evaluation a second) ÷ engine time, at the b1 rate")


class DriftBench(Measured):
    """`reports/<run>/drift.json`: `textclf bench-drift`."""

    variant: str
    server: str
    model: dict[str, Any] | None = Field(None, description="the Bento's own `GET /model` answer")
    reference: DriftReferenceRecord = Field(description="the served variant's drift record in the manifest")
    request_texts: int
    chunk_texts: int
    seed: int
    streams: list[DriftStream]
    cost: DriftCost


class Target(Record):
    target: float
    value: float | None
    met: bool
    at_most: bool = Field(False, description="the value must stay at or under the target (else reach it)")


class EnvelopeCase(Record):
    """One sweep case: the fastest engine measured against what the service runs, and the A/A pair."""

    case: str
    mode: Mode
    best_engine: str
    best_ms: float
    served_ms: float
    ratio: float = Field(description="best_ms ÷ served_ms: 1.0 = the service runs the fastest engine measured")
    aa_ratio: float | None = Field(None, description="served ÷ served-aa: one engine timed as two (None: older)")


class Headline(Record):
    """The figures a newcomer reads first, all ratios of this run's own measurements (None: not measured)."""

    speedup_b1_real: float | None = None
    speedup_b32_s128: float | None = None
    gemm_fraction_b32_s128: float | None = None
    http_rps_ratio_32_users: float | None = None
    best_variant: str | None = None
    accuracy_delta: float | None = None
    best_engine: str | None = None
    speedup_b32_real: float | None = None
    speedup_b32_real_sorted: float | None = Field(None, description="batches of 32 texts sorted by token length")
    achieved_gflops_b32_s128: float | None = None
    gemm_gflops: float | None = None
    test_accuracy: float | None = None
    size_mb: float | None = None
    pytorch_size_mb: float | None = None
    http_rps_32_users: float | None = None
    http_p99_ms_32_users: float | None = None
    http_errors_32_users: int | None = None
    baseline_rps_32_users: float | None = None
    baseline_p99_ms_32_users: float | None = None
    http_rps_ratio_vs_peer_32_users: float | None = None
    http_p99_ratio_vs_peer_32_users: float | None = None
    after_burst_p50_ratio: float | None = None
    engine_busy_32_users: float | None = None
    http_errors_max: int | None = None
    http_rps_ratio_v2_vs_predict_32_users: float | None = None
    http_rps_ratio_hf_vs_predict_32_users: float | None = None
    http_long_rps_ratio_vs_peer_32_users: float | None = Field(None, description="long texts: Bento ÷ peer req/s")
    http_long_rps_ratio_32_users: float | None = Field(None, description="long texts: Bento ÷ baseline req/s")
    http_long_rps_32_users: float | None = None
    http_long_p99_ms_32_users: float | None = None
    http_long_errors: int | None = None
    bulk_ray_vs_local: float | None = Field(None, description="Ray 1 actor × 2 CPUs ÷ local, texts/s, same file")
    bulk_ray_scaling_2_nodes: float | None = Field(None, description="2 Ray nodes × 1 CPU ÷ 1 node × 1 CPU, texts/s")
    engine_envelope_geomean: float | None = Field(
        None, description="geometric mean over sweep cases of (best passing engine's time ÷ the served engine's)"
    )
    engine_envelope_min: float | None = Field(None, description="the same ratio's worst case")
    engine_envelope_case: str | None = Field(None, description="where the min is: `case (mode)`")
    engine_aa_spread: float | None = Field(None, description="median over sweep cases of |served ÷ served-aa − 1|")
    served_engine: str | None = None
    # The serving variant's test split (`Results.confidence`; `textclf_benchmarks.report.confidence_figures`).
    confidence_ece_before: float | None = None
    confidence_ece_after: float | None = None
    confidence_nll_after_minus_before: float | None = None
    confidence_nll_after_minus_before_ci95_high: float | None = None
    confidence_brier_after_minus_before: float | None = None
    confidence_brier_after_minus_before_ci95_high: float | None = None
    selective_threshold_at_0_95: float | None = Field(None, description="from the validation curve")
    selective_coverage_at_0_95: float | None = Field(None, description="test texts answered at that threshold")
    selective_accuracy_at_0_95: float | None = Field(None, description="test accuracy on them")
    selective_accuracy_bound_at_0_95: float | None = Field(None, description="0.95 − 2·√(0.95·0.05 / n answered)")
    explain_deletion_gap_k3: float | None = Field(None, description="log-odds: top-3 words' drop − 3 random words'")
    explain_deletion_gap_k3_ci95_low: float | None = None
    explain_deletion_gap_k3_ci95_high: float | None = None
    explain_cost_ratio_b1: float | None = Field(None, description="explained ÷ plain request, p50, one at a time")
    explain_cost_aa_ratio_b1: float | None = Field(None, description="plain ÷ the same plain request: A/A")
    drift_false_alarm_rate: float | None = Field(None, description="export's check, independent draws (manifest)")
    drift_false_alarm_rate_disjoint: float | None = Field(None, description="the same check, disjoint draws")
    drift_monitor_cpu_ratio_b1: float | None = Field(None, description="monitoring CPU ÷ engine time per text")
    drift_speech_alarm_after_texts: int | None = Field(None, description="speech excerpts sent until the alarm")
    targets: dict[str, Target] = Field(default_factory=dict)


class NotRun(Record):
    ran: Literal[False]
    reason: str


class Results(Measured):
    """`reports/<run>/results.json`: the headline, and every number behind it (`created_at`: when it was written)."""

    bench_created_at: str | None = Field(None, description="when the sweep (bench.json) was measured")
    headline: Headline
    engines: dict[str, BenchEngine]
    speedups: dict[str, dict[str, float]] = Field(description="engine → case → p50 speed-up over PyTorch fp32")
    roofline: Roofline
    rows: list[BenchRow]
    envelope: list[EnvelopeCase] = Field(default_factory=list, description="per case: best engine vs served")
    long_texts: LongTexts | None = None
    http: LoadReport | None = None
    bulk: BulkReport | None = None
    gpu: BenchReport | NotRun
    plots: list[str]
    confidence_variant: str | None = Field(None, description="the serving variant whose confidence record follows")
    confidence: ConfidenceRecord | NotRun | None = Field(None, description="from the run's manifest (None: older)")
    explain: ExplainReport | None = Field(None, description="explain.json (None: `textclf bench-explain` not run)")
    drift: DriftBench | None = Field(None, description="drift.json (None: `textclf bench-drift` not run)")
