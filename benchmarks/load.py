"""`textclf load`: locust against the served Bento, the FastAPI + PyTorch baseline, and a peer server."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench import read_eval_texts
from benchmarks.servers import free_port, running
from textclf.config import Config
from textclf.hardware import machine_info, usable_cores
from textclf.manifest import now_iso, package_versions, require_export, write_report
from textclf.paths import LOAD_JSON
from textclf.schema import ExportSection, LoadPhase, LoadReport, Machine, ServerRecord

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
BIN = Path(sys.executable).parent


def _server_specs(run_dir: Path, export: ExportSection, bento: str | None) -> dict[str, dict]:
    """How to start each server: command, environment, readiness URL path, request shape."""
    checkpoint = export.checkpoint.path
    bento_target = bento or "service:TextClassifier"
    bento_env = {} if bento else {"TEXTCLF_ARTIFACTS": str(run_dir.resolve())}
    specs: dict[str, dict[str, Any]] = {
        "bento": {
            "command": [str(BIN / "bentoml"), "serve", bento_target, "--host", "127.0.0.1", "--port", "{port}"],
            "env": bento_env,
            "ready": "/readyz",
            "api": "textclf",
            "what": f"textclf Bento ({bento_target}), {export.serving_variant} variant, adaptive batching",
        },
        "baseline": {
            "command": [
                str(BIN / "python"),
                "-m",
                "uvicorn",
                "benchmarks.baseline_server:app",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--log-level",
                "warning",
            ],
            "env": {"TEXTCLF_CHECKPOINT": checkpoint},
            "ready": "/healthz",
            "api": "baseline",
            "what": "FastAPI + transformers pipeline on PyTorch (eager fp32), one text per request",
        },
    }
    infinity = shutil.which("infinity_emb") or (str(BIN / "infinity_emb") if (BIN / "infinity_emb").exists() else None)
    specs["infinity"] = {
        "command": [
            infinity,
            "v2",
            "--model-id",
            checkpoint,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--port",
            "{port}",
            "--url-prefix",
            "",
            "--served-model-name",
            "textclf",
        ]
        if infinity
        else None,
        "env": {},
        "ready": "/health",
        "api": "infinity",
        "what": "infinity-emb (torch engine), peer server with its own dynamic batching",
        "missing": None
        if infinity
        else "infinity-emb is not installed in this environment (pip install 'infinity-emb[server,optimum,torch]"
        "==0.0.78' with torch pinned by a constraints file adds it); not measured",
    }
    return specs


def run_locust(url: str, users: int, seconds: int, texts_file: Path, api: str, work: Path, cpus: set[int]) -> dict:
    """One headless, closed-loop locust run; returns req/s, latency percentiles and failures."""
    prefix = work / f"{api}-{users}"
    command = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--stop-timeout",
        "5",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    env = {"TEXTCLF_LOAD_TEXTS": str(texts_file), "TEXTCLF_LOAD_API": api, "TEXTCLF_LOAD_MODEL": "textclf"}
    subprocess.run(
        command,
        env={**os.environ, **env},
        check=True,
        timeout=seconds + 90,
        capture_output=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    with (prefix.parent / f"{prefix.name}_stats.csv").open() as handle:
        aggregated = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    requests_total = int(aggregated["Request Count"])
    return {
        "users": users,
        "seconds": seconds,
        "requests": requests_total,
        "failures": int(aggregated["Failure Count"]),
        "rps": float(aggregated["Requests/s"]),
        "p50_ms": float(aggregated["50%"]),
        "p95_ms": float(aggregated["95%"]),
        "p99_ms": float(aggregated["99%"]),
    }


def run(
    cfg: Config,
    run_dir: Path,
    *,
    bento: str | None = None,
    servers: list[str] | None = None,
    out_dir: Path | None = None,
) -> Path:
    """Load-test each server at each configured user count; write `reports/<run>/load.json`.

    Every server is started here and stopped here, by its process group, whatever happens.
    """
    started = time.perf_counter()
    export = require_export(run_dir)
    out_dir = out_dir or cfg.reports_root / cfg.run
    cpus = set(range(usable_cores())) if cfg.bench.server_cpus is None else set(cfg.bench.server_cpus)
    specs = _server_specs(run_dir, export, bento)
    chosen = servers or list(specs)
    result = LoadReport(
        created_at=now_iso(),
        run=cfg.run,
        machine=Machine.model_validate(machine_info()),
        versions=package_versions(),
        pinning=f"servers and the locust client all pinned to CPUs {sorted(cpus)} with sched_setaffinity "
        "(the client shares the servers' cores)",
        request="one test-split text per request, closed loop (no wait between requests)",
        servers={},
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        texts_file = work / "texts.json"
        texts_file.write_text(json.dumps(read_eval_texts(run_dir, export)))
        for name in chosen:
            spec = specs[name]
            record = ServerRecord(what=spec["what"], ran=False)
            result.servers[name] = record
            if spec.get("missing"):
                record.reason = spec["missing"]
                continue
            port = free_port()
            command = [part.replace("{port}", str(port)) for part in spec["command"]]
            url = f"http://127.0.0.1:{port}"
            log = out_dir / "logs" / f"{name}.log"
            try:
                with running(command, url + spec["ready"], env=spec["env"], log=log, cwd=PROJECT_ROOT, cpus=cpus):
                    for users in cfg.bench.load_users:
                        logger.info("%s: %d users for %d s", name, users, cfg.bench.load_seconds)
                        stats = run_locust(url, users, cfg.bench.load_seconds, texts_file, spec["api"], work, cpus)
                        record.results[str(users)] = LoadPhase.model_validate(stats)
                        logger.info(
                            "%s @%d users: %.1f req/s, p99 %.0f ms, %d failures",
                            name,
                            users,
                            stats["rps"],
                            stats["p99_ms"],
                            stats["failures"],
                        )
                record.ran = True
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                record.ran, record.reason = False, str(exc)[-500:]
                logger.warning("%s: %s", name, str(exc)[-300:])
    result.wall_time_s = round(time.perf_counter() - started, 1)
    return write_report(out_dir / LOAD_JSON, result)
