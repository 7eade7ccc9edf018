"""What every file that crosses a stage boundary shares: a strict record base, the schema version, the pieces
several files hold (file entries, the machine), and typed reads and writes whose errors name the file and field.

The run manifest's models live in `textclf.artifacts.schema`; the benchmark reports' in `textclf_benchmarks.schema`. Records
are strict (`extra="forbid"`) so a foreign or misspelt file is caught; values that are free-form by nature stay
plain dicts, and numbers a stage may not have measured are `None`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from textclf.errors import ArtifactError
from textclf.artifacts.files import atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1  # of every file textclf writes; bump it (and the Literal fields) when a reader would break
_MAX_LISTED_ERRORS = 5
ModelT = TypeVar("ModelT", bound=BaseModel)


class Record(BaseModel):
    # A key this schema does not know is an error: it is how a foreign or misspelt file shows up.
    model_config = ConfigDict(extra="forbid")


# -- shared pieces ----------------------------------------------------------------------------------------------
class FileEntry(Record):
    """One recorded file: its content hash and size."""

    sha256: str
    bytes: int


class Machine(BaseModel):
    """The machine a number was measured on (`textclf.hardware.machine_info`); more facts may be added."""

    model_config = ConfigDict(extra="allow")

    cpu_model: str
    arch: str
    cores: int
    isa: dict[str, bool] = Field(description="tracked ISA flags: avx2, avx512_vnni, amx_int8, ...")
    quantization_preset: str
    gpu: str | None = None
    os: str
    python: str


def describe_validation_error(exc: ValidationError, *, show_input: bool = False) -> str:
    """The problems of one validation, each naming its field by dotted path (the config's also show the value)."""
    parts = []
    for error in exc.errors()[:_MAX_LISTED_ERRORS]:
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        elif show_input:
            parts.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
        else:
            parts.append(f"{where}: {error['msg'].lower()}")
    if exc.error_count() > _MAX_LISTED_ERRORS:
        parts.append(f"and {exc.error_count() - _MAX_LISTED_ERRORS} more")
    return "; ".join(parts)


def parse_artifact(text: str, model: type[ModelT], source: str) -> ModelT:
    """Validate one file's text against its model.

    Args:
        text: the file's content.
        model: `Manifest`, `BenchReport`, `LoadReport` or `Results`.
        source: how to name the file in an error (its path).

    Raises:
        ArtifactError: not JSON, another schema_version, or a field missing, mistyped or unknown; the message
            names the file, its schema_version and the field.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: expected a JSON object, found {type(data).__name__}")
    version = data.get("schema_version")
    if version is not None and version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{source}: schema_version {version!r}, this textclf reads {SCHEMA_VERSION} "
            "(written by another textclf version; run that stage again)"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        label = f"schema_version {version}" if version is not None else "no schema_version"
        raise ArtifactError(f"{source} ({label}): {describe_validation_error(exc)}") from None


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
