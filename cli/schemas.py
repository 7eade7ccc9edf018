"""The JSON Schemas `textclf schema` writes: every file that crosses a stage boundary, core and benchmarks."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from textclf.artifacts.schema import Manifest
from textclf_benchmarks.schema import BenchReport, BulkReport, LoadReport, Results

# The file name each schema is written under by `textclf schema`.
SCHEMAS: Final[dict[str, type[BaseModel]]] = {
    "manifest.schema.json": Manifest,
    "bench.schema.json": BenchReport,
    "load.schema.json": LoadReport,
    "results.schema.json": Results,
    "bulk.schema.json": BulkReport,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """`{file name: JSON Schema}` of every file declared here (draft 2020-12, as pydantic writes it)."""
    schemas = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schemas[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return schemas
