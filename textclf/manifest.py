"""The run manifest (`artifacts/<run>/manifest.json`): read, update one stage's section, write atomically.

Also the sha256 helpers every stage uses to record and verify files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from textclf.errors import ArtifactError
from textclf.paths import MANIFEST_NAME

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
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


def file_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """`{relative path: {"sha256", "bytes"}}` for every file under a folder, sorted by path."""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        entries[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return entries


def folder_digest(entries: dict[str, dict[str, Any]]) -> str:
    """One sha256 over a folder's file entries: changes when any file's content or name changes."""
    lines = "\n".join(f"{name}:{entry['sha256']}" for name, entry in sorted(entries.items()))
    return sha256_bytes(lines.encode())


def verify_files(folder: Path, expected: dict[str, dict[str, Any]]) -> None:
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
        if actual != entry["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's {entry['sha256'][:12]}… "
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
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, or an empty dict when none has been written yet."""
    path = run_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return dict(data)


def require_manifest(run_dir: Path, section: str) -> dict[str, Any]:
    """The manifest, which must already hold `section` (written by an earlier stage)."""
    manifest = read_manifest(run_dir)
    if section not in manifest:
        hint = {"train": "textclf train", "export": "textclf export"}.get(section, "the earlier stage")
        raise ArtifactError(f"{run_dir / MANIFEST_NAME}: no '{section}' section yet; run `{hint}` first")
    return manifest


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


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    path = run_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return path


def update_manifest(
    run_dir: Path,
    section: str,
    payload: dict[str, Any],
    *,
    config: dict[str, Any] | None = None,
    drop_sections: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Replace one stage's section (and refresh the common header), then write the file atomically.

    Args:
        run_dir: the run's artifact folder.
        section: ``train``, ``export``, ...
        payload: that stage's whole section.
        config: the resolved config the stage ran with, recorded at the top level.
        drop_sections: later stages' sections that this one makes stale.
    """
    manifest = read_manifest(run_dir)
    manifest.update(
        {
            "schema_version": SCHEMA_VERSION,
            "run": run_dir.name,
            "created_at": manifest.get("created_at") or now_iso(),
            "updated_at": now_iso(),
            "git_sha": git_sha(),
            "versions": package_versions(),
        }
    )
    if config is not None:
        manifest["config"] = config
    for stale in drop_sections:
        manifest.pop(stale, None)
    manifest[section] = payload
    write_manifest(run_dir, manifest)
    logger.info("manifest section '%s' written to %s", section, run_dir / MANIFEST_NAME)
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
