"""`textclf predict --engine ray`: Ray Data on a real local Ray cluster, compared row for row with the local path.

The fast tier starts one local cluster (what `--engine ray` does without an address); the slow tests start a head
and a second worker node on 127.0.0.1 with `ray start`, run two actors across them, and kill one mid-job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tests.tiny import tiny_texts
from textclf.config import Config
from textclf.inference.runtime import Classifier
from textclf_cli.app import app

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")


def predict(cfg: Config, *args: str | Path) -> Result:
    return CliRunner().invoke(app, ["predict", "--set", f"artifacts_root={cfg.artifacts_root}", *map(str, args)])


def rows_with_bad_ones(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"id": i, "text": text} for i, (text, _) in enumerate(tiny_texts(n, seed=11))]
    rows[3]["text"] = ""
    rows[7]["text"] = "   "
    del rows[9]["text"]
    rows[12]["text"] = 42
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_folder(folder: Path) -> dict[int, dict[str, Any]]:
    """Every part file's rows, by id (each id must appear once)."""
    rows: dict[int, dict[str, Any]] = {}
    parts = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    assert parts
    for part in parts:
        for row in pq.read_table(part).to_pylist() if part.suffix == ".parquet" else read_jsonl(part):
            assert row["id"] not in rows, f"row {row['id']} written twice"
            rows[row["id"]] = row
    return rows


def read_local(path: Path) -> dict[int, dict[str, Any]]:
    rows = pq.read_table(path).to_pylist() if path.suffix == ".parquet" else read_jsonl(path)
    return {row["id"]: row for row in rows}


def assert_same(ray_rows: dict[int, dict[str, Any]], local_rows: dict[int, dict[str, Any]]) -> None:
    assert ray_rows.keys() == local_rows.keys()
    for key, local in local_rows.items():
        got = ray_rows[key]
        assert got["error"] == local["error"] and got["label"] == local["label"], key
        assert got["truncated"] == local["truncated"]
        if local["score"] is not None:
            assert got["score"] == pytest.approx(local["score"], abs=1e-5)
            assert got["scores"] == pytest.approx(local["scores"], abs=1e-5)
        assert got.get("labels") == local.get("labels")
        assert got.get("chunks") == local.get("chunks")
        assert repr(got["input_tokens"]) == repr(local["input_tokens"]), key  # 14 as 14, not 14.0
        assert got.get("abstained") == local.get("abstained")


def test_ray_output_equals_the_local_output_row_for_row(exported_run: Config, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows_with_bad_ones(120))
    local = predict(exported_run, "-i", source, "-o", tmp_path / "local.jsonl")
    assert local.exit_code == 0, local.output
    result = predict(exported_run, "-i", source, "-o", tmp_path / "ray.jsonl", "--engine", "ray")
    assert result.exit_code == 0, result.output
    assert "120 rows: 116 predicted, 4 without text" in result.output
    assert_same(read_folder(tmp_path / "ray.jsonl"), read_local(tmp_path / "local.jsonl"))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_ray_reads_long_texts_in_windows_like_the_local_path(exported_run: Config, tmp_path: Path) -> None:
    rows = rows_with_bad_ones(40)
    for i in (0, 5, 20):  # ~200-600 tokens: 12-40 windows of the tiny model's 32
        rows[i]["text"] = " ".join(text for text, _ in tiny_texts(10 * (i + 2), seed=i))
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    # A selective threshold rides along (the configured one, as a deploy sets it): both paths write `abstained`.
    texts = [row["text"] for row in rows if isinstance(row.get("text"), str) and row["text"].strip()]
    median = sorted(p.score for p in Classifier.from_run(exported_run.run_dir).predict(texts))[len(texts) // 2]
    chunk = (
        "--on-overlength",
        "chunk",
        "--set",
        "serve.chunk_overlap_tokens=8",
        "--set",
        f"serve.min_confidence={median}",
    )
    local = predict(exported_run, "-i", source, "-o", tmp_path / "local.jsonl", *chunk)
    assert local.exit_code == 0, local.output
    result = predict(exported_run, "-i", source, "-o", tmp_path / "ray.jsonl", "--engine", "ray", *chunk)
    assert result.exit_code == 0, result.output
    ray_rows, local_rows = read_folder(tmp_path / "ray.jsonl"), read_local(tmp_path / "local.jsonl")
    assert [ray_rows[i]["chunks"] for i in (0, 5, 20)] == [local_rows[i]["chunks"] for i in (0, 5, 20)]
    assert min(ray_rows[i]["chunks"] for i in (0, 5, 20)) > 5 and ray_rows[1]["chunks"] == 1
    assert {row["abstained"] for row in local_rows.values() if row["error"] is None} == {True, False}
    assert f"{sum(row['abstained'] is True for row in ray_rows.values())} abstained" in result.output
    assert_same(ray_rows, local_rows)


def test_bad_input_is_one_line_and_exit_2_before_any_cluster_work(exported_run: Config, tmp_path: Path) -> None:
    missing = predict(exported_run, "-i", tmp_path / "nope.csv", "-o", tmp_path / "o.parquet", "--engine", "ray")
    assert missing.exit_code == 2 and "no input file" in missing.output
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "body": "x"}])
    column = predict(exported_run, "-i", source, "-o", tmp_path / "o.parquet", "--engine", "ray")
    assert column.exit_code == 2 and "text" in column.output
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A head and a second node on 127.0.0.1, one CPU each; yields the environment that joins it."""
    from textclf_benchmarks.bulk import ray_cluster

    with ray_cluster(2, 1, tmp_path_factory.mktemp("ray")) as env:
        yield env


@pytest.mark.slow
def test_two_nodes_two_actors_and_a_killed_actor_lose_and_repeat_no_row(
    exported_run: Config, two_node_cluster: dict[str, str], tmp_path: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", rows_with_bad_ones(20000))
    local = predict(exported_run, "-i", source, "-o", tmp_path / "local.jsonl")
    assert local.exit_code == 0, local.output
    killed: list[int] = []

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            found = subprocess.run(
                ["pgrep", "-f", r"MapWorker.*Predictor.*submit"], capture_output=True, text=True
            ).stdout.split()
            if found:
                time.sleep(1.0)  # let it take a batch first
                os.kill(int(found[0]), signal.SIGKILL)
                killed.append(int(found[0]))
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    args = ["--engine", "ray", "--address", two_node_cluster["RAY_ADDRESS"], "--actors", "2", "--cpus-per-actor", "1"]
    # A real `textclf` process, as a user runs it against a cluster (Ray reads the token when it is imported).
    textclf = str(Path(sys.executable).parent / "textclf")
    command = [textclf, "predict", "--set", f"artifacts_root={exported_run.artifacts_root}", "-i", str(source)]
    command += ["-o", str(tmp_path / "ray.jsonl"), *args, "--batch-size", "8"]
    env = {**os.environ, **two_node_cluster}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    killer.join(timeout=5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert killed, "no actor was killed: the test proved nothing"
    assert_same(read_folder(tmp_path / "ray.jsonl"), read_local(tmp_path / "local.jsonl"))


def test_an_actor_keeps_no_copy_of_the_model_on_disk_once_loaded(
    exported_run: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from textclf.bulk.ray_data import Predictor, _model_files

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the actor writes the shipped files
    files, _ = _model_files(exported_run.artifacts_root / exported_run.run)
    actor = Predictor(files, "text", batch_size=8, threads=1, output_format="parquet", lines=False)
    assert list(tmp_path.iterdir()) == []  # every file it wrote is gone, the engines loaded
    texts = [text for text, _ in tiny_texts(5, seed=3)]
    out = actor(pd.DataFrame({"id": range(5), "text": texts}))
    local = Classifier.from_run(exported_run.artifacts_root / exported_run.run).predict(texts)
    assert list(out["label"]) == [p.label for p in local]
