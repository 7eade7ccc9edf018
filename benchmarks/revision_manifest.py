"""A run folder another revision of textclf can read: the same files, a manifest without the keys it does not know.

The manifest's records are strict (`extra="forbid"`), so an older revision refuses a manifest written by newer code
(ShapeTiming's `case` and `calls`, for one). `revision_ab` gives such a revision a view of the run: a folder of
symlinks to the run's own files and folders, next to a copy of `manifest.json` with the unknown keys removed. Which
keys are unknown is asked of the revision's own schema (a probe run with that checkout first on `sys.path`), never
listed by hand: whatever the old `Manifest` calls `extra_forbidden` goes, anything else it refuses is an error.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textclf.errors import ArtifactError
from textclf.paths import MANIFEST_NAME, ONNX_DIR

logger = logging.getLogger(__name__)

EXTRA_FORBIDDEN = "extra_forbidden"
_MAX_PASSES = 5  # a union's members may report their extras one pass at a time

# Run with a revision's checkout first on sys.path: which textclf it imports, what its `Manifest` says of the file,
# and the variants it would serve. Only names every revision since the typed manifest has are used.
_PROBE = """
import json, sys
from pathlib import Path
import textclf
from pydantic import ValidationError
try:
    from textclf.artifacts.manifest import Manifest
except ImportError:  # revisions before the core's rooms
    from textclf.manifest import Manifest
data = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
out = {"textclf_file": textclf.__file__, "errors": [], "served_variants": []}
try:
    manifest = Manifest.model_validate(data)
except ValidationError as exc:
    out["errors"] = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
else:
    export = manifest.export
    route = getattr(export, "serving_route", None) if export else None
    if export is not None and export.serving_variant:
        out["served_variants"] = [export.serving_variant] + ([route.variant] if route is not None else [])
print(json.dumps(out))
"""


@dataclass
class Probe:
    """What one revision's code makes of a manifest."""

    textclf_file: str
    errors: list[dict[str, Any]]
    served_variants: list[str]


@dataclass
class RevisionView:
    """The run folder one revision serves from, and what had to change for it to read the manifest."""

    run_dir: Path
    stripped: list[str] = field(default_factory=list)  # dotted paths of the keys removed
    textclf_file: str = ""
    served_variants: list[str] = field(default_factory=list)


def dotted(loc: list[Any] | tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def collapse(keys: list[str]) -> list[str]:
    """Dotted keys with list indices as `*`, each pattern once with its count: `export.shape_timings.*.case (35×)`."""
    counts: dict[str, int] = {}
    for key in keys:
        pattern = ".".join("*" if part.isdigit() else part for part in key.split("."))
        counts[pattern] = counts.get(pattern, 0) + 1
    return [f"{pattern} ({n}×)" if n > 1 else pattern for pattern, n in counts.items()]


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def delete_path(data: Any, loc: list[Any] | tuple[Any, ...]) -> bool:
    """Remove the key at pydantic error location `loc` from nested dicts and lists; True when it was there.

    A location element that is neither a key of the dict reached nor an index of the list (pydantic puts a union
    member's name or a tag into the location) is passed over; the last element must be a key present."""
    if not loc:
        return False
    node = data
    for part in loc[:-1]:
        if _has(node, part):
            node = node[part]
        # else: a union member's name or tag, not a step into the data
    last = loc[-1]
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def strip_unknown(data: dict[str, Any], errors: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `data` without the keys the errors call `extra_forbidden`, and their dotted paths.

    Raises:
        ArtifactError: an error of another kind (a missing field, a value the schema does not allow): removing
            keys cannot make such a manifest readable; or an unknown key not found where the error puts it.
    """
    others = [e for e in errors if e["type"] != EXTRA_FORBIDDEN]
    if others:
        listed = "; ".join(f"{dotted(e['loc'])}: {e['msg']}" for e in others[:5])
        raise ArtifactError(f"the manifest cannot be made readable by removing keys: {listed}")
    stripped = copy.deepcopy(data)
    removed = []
    for error in {dotted(e["loc"]): e for e in errors}.values():  # union members may report one key twice
        if not delete_path(stripped, error["loc"]):
            raise ArtifactError(f"unknown key {dotted(error['loc'])} not found in the manifest")
        removed.append(dotted(error["loc"]))
    return stripped, removed


def probe(manifest: Path, checkout: Path, env: dict[str, str]) -> Probe:
    """Ask the textclf of `checkout` (imported as the revision's server imports it) about `manifest`."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(manifest)],
        cwd=checkout,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise ArtifactError(f"the manifest probe failed in {checkout}: {result.stderr[-2000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return Probe(out["textclf_file"], out["errors"], out["served_variants"])


def link_run(run_dir: Path, view: Path, manifest: dict[str, Any]) -> Path:
    """`view`: a symlink to each entry of `run_dir` but the manifest, and `manifest` written as its manifest."""
    view.mkdir(parents=True)
    for entry in sorted(run_dir.iterdir()):
        if entry.name != MANIFEST_NAME:
            (view / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    (view / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return view


def view_for(run_dir: Path, checkout: Path, env: dict[str, str], view: Path) -> RevisionView:
    """The run folder the revision at `checkout` can serve: `run_dir` itself when it reads the manifest as it is,
    else a linked copy (`view`) whose manifest lacks the keys that revision does not know.

    Raises:
        ArtifactError: the revision still refuses the manifest, or a variant it would serve has no folder.
    """
    path = run_dir / MANIFEST_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    found = probe(path, checkout, env)
    removed: list[str] = []
    for _ in range(_MAX_PASSES):
        if not found.errors:
            break
        data, more = strip_unknown(data, found.errors)
        removed += more
        candidate = view.parent / f"{view.name}-{MANIFEST_NAME}"
        candidate.write_text(json.dumps(data), encoding="utf-8")
        found = probe(candidate, checkout, env)
    if found.errors:
        raise ArtifactError(f"{checkout}: still refuses the manifest: {found.errors[:3]}")
    served_from = link_run(run_dir, view, data) if removed else run_dir
    if removed:
        logger.info("%s: manifest without %d unknown key(s): %s", checkout, len(removed), ", ".join(collapse(removed)))
    if not found.served_variants:
        raise ArtifactError(f"{checkout}: the manifest names no serving variant it can serve")
    for variant in found.served_variants:
        if not (served_from / ONNX_DIR / variant).is_dir():
            raise ArtifactError(f"{checkout}: serves {variant!r}, but {served_from / ONNX_DIR / variant} is missing")
    return RevisionView(served_from, removed, found.textclf_file, found.served_variants)
