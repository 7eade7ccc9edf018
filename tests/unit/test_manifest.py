from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.artifacts import export_section, train_section
from textclf.artifacts.files import atomic_dir
from textclf.artifacts.manifest import (
    SCHEMA_VERSION,
    file_entries,
    folder_digest,
    read_manifest,
    require_export,
    require_manifest,
    require_train,
    update_manifest,
    verify_files,
)
from textclf.errors import ArtifactError


def test_update_keeps_other_sections_and_drops_stale_ones(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None
    update_manifest(tmp_path, train_section(0.5), config={"run": "x"})
    update_manifest(tmp_path, export_section())
    first = read_manifest(tmp_path)
    assert first is not None and first.schema_version == SCHEMA_VERSION
    assert first.train == train_section(0.5) and first.export == export_section()
    assert first.run == tmp_path.name and first.config == {"run": "x"} and first.created_at
    assert {"run", "created_at", "git_sha", "versions", "config"} <= set(
        json.loads((tmp_path / "manifest.json").read_text())
    )

    update_manifest(tmp_path, train_section(0.75), drop_sections=("export",))
    second = read_manifest(tmp_path)
    assert second is not None and second.train == train_section(0.75) and second.export is None
    assert "export" not in json.loads((tmp_path / "manifest.json").read_text()), "a dropped section has no key"
    assert second.created_at == first.created_at and second.config == {"run": "x"}
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must not be left behind"


def test_read_refuses_other_schema_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ArtifactError, match="schema_version 99, this textclf reads 1"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_require_manifest_names_the_missing_stage(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="textclf train"):
        require_manifest(tmp_path, "train")
    update_manifest(tmp_path, train_section())
    assert require_train(tmp_path) == train_section()
    with pytest.raises(ArtifactError, match="no 'export' section yet; run `textclf export` first"):
        require_export(tmp_path)


def test_verify_files_detects_change_and_missing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.onnx").write_bytes(b"weights")
    (tmp_path / "sub" / "config.json").write_text("{}")
    entries = file_entries(tmp_path)
    assert set(entries) == {"model.onnx", "sub/config.json"}
    assert entries["model.onnx"].bytes == 7
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
