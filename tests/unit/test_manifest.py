from __future__ import annotations

import json
from pathlib import Path

import pytest

from textclf.errors import ArtifactError
from textclf.manifest import (
    SCHEMA_VERSION,
    atomic_dir,
    file_entries,
    folder_digest,
    read_manifest,
    require_manifest,
    update_manifest,
    verify_files,
)


def test_update_keeps_other_sections_and_drops_stale_ones(tmp_path: Path) -> None:
    update_manifest(tmp_path, "train", {"a": 1}, config={"run": "x"})
    update_manifest(tmp_path, "export", {"b": 2})
    first = read_manifest(tmp_path)
    assert first["schema_version"] == SCHEMA_VERSION
    assert first["train"] == {"a": 1} and first["export"] == {"b": 2}
    assert {"run", "created_at", "git_sha", "versions", "config"} <= set(first)

    update_manifest(tmp_path, "train", {"a": 3}, drop_sections=("export",))
    second = read_manifest(tmp_path)
    assert second["train"] == {"a": 3} and "export" not in second
    assert second["created_at"] == first["created_at"]
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must not be left behind"


def test_read_refuses_other_schema_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema_version"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_require_manifest_names_the_missing_stage(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="textclf train"):
        require_manifest(tmp_path, "train")


def test_verify_files_detects_change_and_missing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.onnx").write_bytes(b"weights")
    (tmp_path / "sub" / "config.json").write_text("{}")
    entries = file_entries(tmp_path)
    assert set(entries) == {"model.onnx", "sub/config.json"}
    assert entries["model.onnx"]["bytes"] == 7
    verify_files(tmp_path, entries)

    digest = folder_digest(entries)
    (tmp_path / "model.onnx").write_bytes(b"weightz")
    assert folder_digest(file_entries(tmp_path)) != digest
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256"):
        verify_files(tmp_path, entries)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"model\.onnx: file listed in the manifest is missing"):
        verify_files(tmp_path, entries)


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "variant"
    with atomic_dir(target) as staging:
        (staging / "f").write_text("v1")
    assert (target / "f").read_text() == "v1"

    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "f").write_text("half-written")
        raise RuntimeError("export failed")
    assert (target / "f").read_text() == "v1", "a failure must leave the previous folder untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["variant"], "no staging folder may remain"

    with atomic_dir(target) as staging:
        (staging / "g").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["g"]
