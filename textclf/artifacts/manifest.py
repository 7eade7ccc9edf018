"""The run manifest (`artifacts/<run>/manifest.json`): read, update one stage's section, write atomically.

The manifest's schema lives in `textclf.artifacts.schema`; this module does its IO (typed reads with errors that say which
stage to run, atomic writes) and records and verifies the files of a stage's folders by sha256.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Literal, TypeVar

from textclf.errors import ArtifactError
from textclf.artifacts.files import atomic_write_text, git_sha, now_iso, sha256_bytes, sha256_file
from textclf.paths import MANIFEST_NAME
from textclf.artifacts.records import SCHEMA_VERSION, FileEntry, load_report
from textclf.artifacts.schema import ExportSection, Manifest, TrainSection

logger = logging.getLogger(__name__)

SectionName = Literal["train", "export"]
_NEXT_STEP = {"train": "textclf train", "export": "textclf export"}
TRACKED_PACKAGES = (
    "textclf",
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "bentoml",
    "numpy",
    "scikit-learn",
)


def file_entries(folder: Path) -> dict[str, FileEntry]:
    """`{relative path: FileEntry}` for every file under a folder, sorted by path."""
    entries: dict[str, FileEntry] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        entries[path.relative_to(folder).as_posix()] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    return entries


def folder_digest(entries: Mapping[str, FileEntry]) -> str:
    """One sha256 over a folder's file entries: changes when any file's content or name changes."""
    lines = "\n".join(f"{name}:{entry.sha256}" for name, entry in sorted(entries.items()))
    return sha256_bytes(lines.encode())


def verify_files(folder: Path, expected: Mapping[str, FileEntry]) -> None:
    """Check every recorded file exists under `folder` with its recorded sha256.

    Raises:
        ArtifactError: naming the first file that is missing or whose content differs.
    """
    if not expected:
        raise ArtifactError(f"{folder}: the manifest lists no files for it")
    for name, entry in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: file listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ArtifactError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's {entry.sha256[:12]}… "
                "(the file changed after it was recorded)"
            )


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for reproducing a run."""
    versions = {}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


SectionT = TypeVar("SectionT", TrainSection, ExportSection)


def read_manifest(run_dir: Path) -> Manifest | None:
    """The run's manifest, or None when no stage has written one yet.

    Raises:
        ArtifactError: the file exists but is not a manifest this textclf reads.
    """
    path = run_dir / MANIFEST_NAME
    return load_report(path, Manifest) if path.exists() else None


def _missing(run_dir: Path, name: SectionName) -> ArtifactError:
    return ArtifactError(f"{run_dir / MANIFEST_NAME}: no '{name}' section yet; run `{_NEXT_STEP[name]}` first")


def require_section(section: SectionT | None, run_dir: Path, name: SectionName) -> SectionT:
    """`section` itself, or the error that says which stage to run first when it has not run."""
    if section is None:
        raise _missing(run_dir, name)
    return section


def require_manifest(run_dir: Path, section: SectionName) -> Manifest:
    """The manifest, which must already hold `section` (written by an earlier stage)."""
    manifest = read_manifest(run_dir)
    if manifest is None or (manifest.train if section == "train" else manifest.export) is None:
        raise _missing(run_dir, section)
    return manifest


def require_train(run_dir: Path) -> TrainSection:
    """The manifest's `train` section; an error names `textclf train` when it has not run."""
    manifest = read_manifest(run_dir)
    return require_section(manifest.train if manifest else None, run_dir, "train")


def require_export(run_dir: Path) -> ExportSection:
    """The manifest's `export` section; an error names `textclf export` when it has not run."""
    manifest = read_manifest(run_dir)
    return require_section(manifest.export if manifest else None, run_dir, "export")


def write_manifest(run_dir: Path, manifest: Manifest) -> Path:
    path = run_dir / MANIFEST_NAME
    atomic_write_text(path, manifest.to_json())
    return path


def update_manifest(
    run_dir: Path,
    section: TrainSection | ExportSection,
    *,
    config: dict[str, object] | None = None,
    drop_sections: tuple[SectionName, ...] = (),
) -> Manifest:
    """Replace one stage's section (and refresh the common header), then write the file atomically.

    Args:
        run_dir: the run's artifact folder.
        section: that stage's whole section; its type says which one it is.
        config: the resolved config the stage ran with, recorded at the top level.
        drop_sections: later stages' sections that this one makes stale.
    """
    previous = read_manifest(run_dir)
    train = previous.train if previous else None
    export = previous.export if previous else None
    if "train" in drop_sections:
        train = None
    if "export" in drop_sections:
        export = None
    if isinstance(section, TrainSection):
        train, name = section, "train"
    else:
        export, name = section, "export"
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        run=run_dir.name,
        created_at=previous.created_at if previous else now_iso(),
        updated_at=now_iso(),
        git_sha=git_sha(),
        versions=package_versions(),
        config=config if config is not None else (previous.config if previous else {}),
        train=train,
        export=export,
    )
    write_manifest(run_dir, manifest)
    logger.info("manifest section '%s' written to %s", name, run_dir / MANIFEST_NAME)
    return manifest
