"""The run manifest (`artifacts/<run>/manifest.json`): read, update one stage's section, write atomically.

The manifest's schema lives in `textclf.schema` (`Manifest` is re-exported here as its public name); this module
does the IO: typed reads with clear errors, atomic writes, and the sha256 helpers every stage uses to record and
verify files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel

from textclf.errors import ArtifactError
from textclf.paths import MANIFEST_NAME
from textclf.schema import SCHEMA_VERSION, ExportSection, FileEntry, Manifest, TrainSection, parse_artifact

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
_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def git_sha() -> str | None:
    """The commit of the code that produced an artifact, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


ModelT = TypeVar("ModelT", bound=BaseModel)
SectionT = TypeVar("SectionT", TrainSection, ExportSection)


def load_report(path: Path, model: type[ModelT]) -> ModelT:
    """Read and validate one typed file (the manifest or a report).

    Raises:
        ArtifactError: the file is missing, not JSON, of another schema_version, or does not match `model`
            (the message names the field).
    """
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    return parse_artifact(path.read_text(encoding="utf-8"), model, str(path))


def write_report(path: Path, report: BaseModel) -> Path:
    """Write a typed file atomically, in the key order of its model."""
    atomic_write_text(path, report.model_dump_json(indent=2) + "\n")
    logger.info("wrote %s", path)
    return path


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename it over the target."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename it over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


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


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `target`, on failure it is removed.

    A reader never sees a half-written folder: the final rename is the only moment `target` changes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staging: Path, target: Path) -> None:
    """Move a complete folder into place, replacing `target`; each rename is atomic on one filesystem."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        retired = target.with_name(f".{target.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)
