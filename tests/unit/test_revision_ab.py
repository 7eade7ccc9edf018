"""revision_ab's pure parts: a manifest stripped of exactly the keys a schema refuses, the linked run folder an
older revision serves from, and the per-round ratios of the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.artifacts import export_section, train_section
from textclf.artifacts.manifest import update_manifest
from textclf.artifacts.schema import Manifest
from textclf.errors import ArtifactError
from textclf.paths import MANIFEST_NAME, ONNX_DIR
from textclf_benchmarks.revision_ab_report import PhaseRun, summarize
from textclf_benchmarks.revision_manifest import collapse, delete_path, strip_unknown, view_for
from textclf_benchmarks.schema import LoadPhase

REPO = Path(__file__).resolve().parents[2]


def _manifest(tmp_path: Path) -> dict[str, Any]:
    update_manifest(tmp_path, train_section())
    update_manifest(tmp_path, export_section())
    data: dict[str, Any] = json.loads((tmp_path / MANIFEST_NAME).read_text())
    return data


def _errors(data: dict[str, Any]) -> list[dict[str, Any]]:
    """What the probe reports: the schema's own errors, as JSON."""
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        return [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    return []


def _with_newer_keys(data: dict[str, Any]) -> dict[str, Any]:
    data["export"]["shape_timings"] = [{"batch": 1, "seq_len": 16, "ms": {"fp32": 1.0}, "from_the_future": 2}]
    data["export"]["variants"]["fp32"]["newer_gate"] = {"passed": True}
    data["export"]["newer_section"] = "x"
    return data


def test_strip_unknown_removes_exactly_the_keys_the_schema_refuses(tmp_path: Path) -> None:
    original = _manifest(tmp_path)
    newer = _with_newer_keys(json.loads(json.dumps(original)))
    errors = _errors(newer)
    assert errors

    stripped, removed = strip_unknown(newer, errors)

    assert sorted(removed) == [
        "export.newer_section",
        "export.shape_timings.0.from_the_future",
        "export.variants.fp32.newer_gate",
    ]
    assert _errors(stripped) == []
    assert "newer_section" in newer["export"]  # the input is left as it was
    expected = json.loads(json.dumps(original))
    expected["export"]["shape_timings"] = [{"batch": 1, "seq_len": 16, "ms": {"fp32": 1.0}}]
    assert stripped == expected  # nothing else touched


def test_strip_unknown_refuses_what_removing_keys_cannot_fix(tmp_path: Path) -> None:
    data = _with_newer_keys(_manifest(tmp_path))
    del data["export"]["variants"]["fp32"]["passed"]
    with pytest.raises(ArtifactError, match=r"export\.variants\.fp32\.passed"):
        strip_unknown(data, _errors(data))


def test_delete_path_steps_over_union_member_names_and_reports_a_miss() -> None:
    data: dict[str, Any] = {"a": [{"b": 1, "c": 2}]}
    assert delete_path(data, ["a", 0, "SomeMember", "c"])
    assert data == {"a": [{"b": 1}]}
    assert not delete_path(data, ["a", 0, "c"])
    assert not delete_path(data, [])


def test_view_for_links_the_run_and_writes_the_manifest_the_revision_reads(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / MANIFEST_NAME).write_text(json.dumps(_with_newer_keys(_manifest(run_dir))))
    (run_dir / ONNX_DIR / "fp32").mkdir(parents=True)
    (run_dir / "eval_texts.jsonl").write_text("{}\n")

    view = view_for(run_dir, REPO, {}, tmp_path / "view")

    assert view.run_dir == tmp_path / "view"
    assert len(view.stripped) == 3
    assert view.served_variants == ["fp32"]
    assert Path(view.textclf_file).parent == REPO / "textclf"
    assert (view.run_dir / "eval_texts.jsonl").resolve() == (run_dir / "eval_texts.jsonl").resolve()
    assert (view.run_dir / ONNX_DIR).is_symlink()
    assert _errors(json.loads((view.run_dir / MANIFEST_NAME).read_text())) == []
    assert "newer_section" in json.loads((run_dir / MANIFEST_NAME).read_text())["export"]  # the run's own is kept


def test_view_for_names_a_served_variant_without_a_folder(tmp_path: Path) -> None:
    _manifest(tmp_path)  # readable as it is: the run folder itself, but onnx/fp32 is not there
    with pytest.raises(ArtifactError, match="fp32"):
        view_for(tmp_path, REPO, {}, tmp_path / "view")


def test_collapse_counts_each_pattern_once() -> None:
    keys = ["export.shape_timings.0.case", "export.shape_timings.0.calls", "export.shape_timings.12.case", "export.x"]
    assert collapse(keys) == ["export.shape_timings.*.case (2×)", "export.shape_timings.*.calls", "export.x"]


def _phase(users: int, rps: float, p50: float) -> LoadPhase:
    return LoadPhase(
        users=users, seconds=20, requests=int(rps * 20), failures=0, rps=rps, p50_ms=p50, p95_ms=p50, p99_ms=2 * p50
    )


def test_summary_takes_the_median_of_each_rounds_ratio() -> None:
    rows = [(0, "old", 100.0), (0, "new", 110.0), (1, "new", 90.0), (1, "old", 100.0), (2, "old", 200.0)]
    rows += [(2, "new", 190.0), (3, "old", 1.0)]  # round 3 ran one side only: left out
    phases = [PhaseRun(round=r, side=side, users=8, phase=_phase(8, rps, 10.0)) for r, side, rps in rows]

    (summary,) = summarize(phases)

    assert summary.rps_ratio_per_round == [1.1, 0.9, 0.95]
    assert summary.rps_ratio == pytest.approx(0.95)
    assert summary.rps == {"old": 100.0, "new": 110.0}
    assert summary.p50_ratio == pytest.approx(1.0)
