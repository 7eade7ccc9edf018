"""The served Bento at two git revisions on the same exported model, in one run: is the new code as fast?

    python -m textclf_benchmarks.revision_ab --old 38a80ab^ [--new HEAD] [--rounds 3] [--users 8 32] [--seconds 20]

Each revision is checked out in a temporary git worktree (`--new .` takes the checkout as it stands) and served
with `bentoml serve service:TextClassifier` from there, as `textclf load` serves its `bento` server (the same
`ServerSpec`, workers, threads and CPUs), with the worktree first on PYTHONPATH so its own `textclf` is imported
(the workers' stacks, read with py-spy, are recorded to show it). Both read the run's files through
`revision_manifest.view_for`: an older revision gets a linked copy of the run folder whose manifest lacks the keys
its schema refuses. Both servers stay up; after a warm-up each, the short-text phases (`textclf load`'s
`_measure_phase`: one test text per request, closed loop) alternate old, new per user count, the first side
swapped every round. Output: `reports/<run>/revision_ab.json` and `.md`. Servers are stopped and worktrees
removed whatever happens (SIGTERM included).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import psutil
import requests

from textclf.artifacts.files import atomic_write_text, now_iso
from textclf.artifacts.manifest import package_versions, require_export
from textclf.artifacts.records import Machine, write_report
from textclf.config import load_config
from textclf.hardware import machine_info, usable_cores
from textclf.log import setup_logging
from textclf_benchmarks.config import BenchmarkConfig
from textclf_benchmarks.load import _measure_phase, run_locust
from textclf_benchmarks.load_servers import BIN, PROJECT_ROOT, ServerSpec, server_specs, started
from textclf_benchmarks.revision_ab_report import SIDES, PhaseRun, RevisionAbReport, RevisionRecord, Side, render
from textclf_benchmarks.revision_ab_report import summarize as summarize_phases
from textclf_benchmarks.revision_manifest import RevisionView, view_for
from textclf_benchmarks.texts import read_eval_texts

logger = logging.getLogger(__name__)

REVISION_AB_JSON = "revision_ab.json"
REVISION_AB_MD = "revision_ab.md"
CHECKOUT_AS_IS = "."  # --new/--old value: the checkout with its uncommitted edits, not a worktree
ON_OVERLENGTH = "truncate"  # the default path under test
_STACK_FILE = re.compile(r"\((/[^():]+\.py):\d+\)")
_LSCPU_KEYS = {
    "Model name": "model_name",
    "Vendor ID": "vendor",
    "CPU family": "family",
    "Model": "model",
    "Stepping": "stepping",
    "CPU(s)": "cpus",
    "Thread(s) per core": "threads_per_core",
}


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: fields[name].strip() for name, key in _LSCPU_KEYS.items() if name in fields}


def checkout(rev: str, work: Path, side: Side, stack: ExitStack) -> tuple[Path, str, str, dict[str, str]]:
    """(folder, sha, subject, environment) of a revision: a detached worktree removed when `stack` closes."""
    if rev == CHECKOUT_AS_IS:
        dirty = " (+ uncommitted edits)" if _git("status", "--porcelain", "--untracked-files=no") else ""
        return PROJECT_ROOT, _git("rev-parse", "HEAD") + dirty, _git("log", "-1", "--format=%s", "HEAD"), {}
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    folder = work / f"worktree-{side}"
    _git("worktree", "add", "--detach", str(folder), sha)
    stack.callback(_git, "worktree", "remove", "--force", str(folder))
    # A PathFinder entry wins over the editable install's finder (it sits after PathFinder on sys.meta_path).
    return folder, sha, _git("log", "-1", "--format=%s", sha), {"PYTHONPATH": str(folder)}


def stack_files(pid: int) -> list[str]:
    """textclf and service.py files in the stacks of a server's worker processes (py-spy dump; [] if it fails)."""
    found: set[str] = set()
    try:
        processes = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for process in processes:
        command = [str(BIN / "py-spy"), "dump", "--full-filenames", "--pid", str(process.pid)]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("py-spy dump %d: %s", process.pid, exc)
            continue
        found.update(_STACK_FILE.findall(out))
    # The project's own files: textclf/ and service.py outside any installed package (bentoml has a service.py).
    own = [f for f in found if "-packages/" not in f and ("/textclf/" in f or f.endswith("/service.py"))]
    return sorted(own)


def served_model(url: str) -> dict[str, object]:
    answer: dict[str, object] = requests.get(f"{url}/model", timeout=10).json()
    return answer


def changes_between(old_sha: str, new_sha: str) -> list[str]:
    old, new = old_sha.split(" ")[0], new_sha.split(" ")[0]
    log = _git("log", "--oneline", "--no-decorate", f"{old}..{new}", "--", "textclf", "service.py", "configs")
    return [line[:200] for line in log.splitlines()]


def run(
    cfg: BenchmarkConfig,
    *,
    old: str,
    new: str,
    rounds: int,
    users: list[int],
    seconds: int,
    warmup_s: int,
    command: str,
    out_dir: Path | None = None,
) -> Path:
    """Serve the run's model at `old` and `new`, alternate their phases, write revision_ab.json and .md."""
    started_at = time.perf_counter()
    run_dir = cfg.run_dir.resolve()
    export = require_export(run_dir)
    out_dir = out_dir or cfg.reports_root / cfg.run
    cpus = set(range(usable_cores())) if cfg.bench.server_cpus is None else set(cfg.bench.server_cpus)
    with tempfile.TemporaryDirectory(prefix="textclf-ab-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        bento = next(s for s in server_specs(cfg, run_dir, export, None, work) if s.name == "bento")
        records: dict[Side, RevisionRecord] = {}
        specs: dict[Side, ServerSpec] = {}
        for side, rev in zip(SIDES, (old, new), strict=True):
            folder, sha, subject, env = checkout(rev, work, side, stack)
            view: RevisionView = view_for(run_dir, folder, env, work / f"run-{side}")
            records[side] = RevisionRecord(
                rev=rev,
                sha=sha,
                subject=subject,
                checkout=str(folder),
                textclf_file=view.textclf_file,
                stripped_manifest_keys=view.stripped,
                run_dir=str(view.run_dir),
                served_variants=view.served_variants,
            )
            env = {**bento.env, **env, "TEXTCLF_ARTIFACTS": str(view.run_dir), "TEXTCLF_ON_OVERLENGTH": ON_OVERLENGTH}
            # A home each: a starting server empties its home's Prometheus multiprocess folder, so with one shared
            # the first server's /metrics would read the second's workers (its engine busy fraction with them).
            env["BENTOML_HOME"] = str(work / f"bentoml-home-{side}")
            specs[side] = replace(bento, name=f"bento-{side}", cwd=folder, env=env)
        texts = work / "texts.json"
        texts.write_text(json.dumps(read_eval_texts(run_dir, export)))
        servers = {}
        for side in SIDES:
            log = out_dir / "logs" / f"revision_ab-{side}.log"
            servers[side] = stack.enter_context(started(specs[side], log, cpus))
            process, url = servers[side]
            records[side].model = served_model(url)
            records[side].server_textclf_files = stack_files(process.pid)
            logger.info(
                "%s (%s): up at %s, stacks show %s", side, records[side].rev, url, records[side].server_textclf_files
            )
        if records["old"].model.get("sha256") != records["new"].model.get("sha256"):
            raise RuntimeError(f"the two servers serve different models: {records['old'].model} {records['new'].model}")
        report = RevisionAbReport(
            created_at=now_iso(),
            command=command,
            run=cfg.run,
            machine=Machine.model_validate(machine_info()),
            lscpu=lscpu(),
            versions=package_versions(),
            settings={
                **bento.settings,
                "on_overlength": ON_OVERLENGTH,
                "cpus": sorted(cpus),
                "rounds": rounds,
                "users": users,
                "seconds": seconds,
                "warmup_s": warmup_s,
            },
            request="one test-split text per request (textclf load's short texts), closed loop, POST /predict; "
            "servers and the locust client pinned to the same CPUs",
            order="both servers up the whole run; a warm-up of each (1 user, then the most users); then per round "
            "and user count old, new, with the first side swapped every round (old first in round 0)",
            revisions=records,
            changes=changes_between(records["old"].sha, records["new"].sha),
        )
        for side in SIDES:
            _, url = servers[side]
            for warm_users in sorted({1, max(users)}) if warmup_s else []:
                run_locust(url, warm_users, warmup_s, texts, specs[side].api, work, cpus)
        for index in range(rounds):
            order = SIDES if index % 2 == 0 else SIDES[::-1]
            for count in users:
                for side in order:
                    process, url = servers[side]
                    phase = _measure_phase(
                        specs[side], process, url, f"r{index}-{count}", count, seconds, texts, work, cpus
                    )
                    report.phases.append(PhaseRun(round=index, side=side, users=count, phase=phase))
        report.summary = summarize_phases(report.phases)
    report.wall_time_s = round(time.perf_counter() - started_at, 1)
    path = write_report(out_dir / REVISION_AB_JSON, report)
    atomic_write_text(out_dir / REVISION_AB_MD, render(report))
    return path


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: servers stopped, worktrees removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m textclf_benchmarks.revision_ab", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--old", required=True, help="git revision of the baseline (e.g. 38a80ab^), or . (checkout)")
    parser.add_argument("--new", default="HEAD", help="git revision under test (default HEAD), or . (checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=int, default=None, help="per phase; default bench.load_seconds")
    parser.add_argument("--warmup-seconds", type=int, default=None, help="default bench.load_warmup_seconds")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out-dir", type=Path, default=None, help="default reports/<run>")
    args = parser.parse_args(argv)
    if args.rounds < 1 or not args.users or min(args.users) < 1:
        parser.error("--rounds and every --users must be at least 1")
    setup_logging()
    signal.signal(signal.SIGTERM, _sigterm)
    cfg = load_config(args.config, args.overrides, model=BenchmarkConfig)
    path = run(
        cfg,
        old=args.old,
        new=args.new,
        rounds=args.rounds,
        users=args.users,
        seconds=args.seconds or cfg.bench.load_seconds,
        warmup_s=cfg.bench.load_warmup_seconds if args.warmup_seconds is None else args.warmup_seconds,
        command=shlex.join(sys.orig_argv),
        out_dir=args.out_dir,
    )
    logger.info("wrote %s and %s", path, path.with_name(REVISION_AB_MD))


if __name__ == "__main__":
    main()
