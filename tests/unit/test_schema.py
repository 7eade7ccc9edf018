"""The artifact schema: committed reports validate and round-trip, foreign files fail with a clear error, and the
JSON Schemas that `textclf schema` writes match the models and the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from tests.artifacts import export_section, train_section, validate_against_schema
from tests.imports import assert_imports_without
from textclf.artifacts.manifest import read_manifest, update_manifest
from textclf.artifacts.records import load_report, parse_artifact
from textclf.artifacts.schema import Manifest
from textclf.errors import ArtifactError
from textclf.paths import SCHEMAS_DIR
from textclf_benchmarks.schema import BenchReport, BulkReport, LoadReport, Results
from textclf_cli.app import app
from textclf_cli.schemas import SCHEMAS, json_schemas

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "reports" / "default"
REPORTS: dict[str, type[BaseModel]] = {
    "bench": BenchReport,
    "bench-cuda": BenchReport,
    "load": LoadReport,
    "results": Results,
}
SCHEMA_OF = {"bench-cuda": "bench"}  # a report file whose schema has another file's name


# What a key the model adds to an older file may hold: its version, or a field's empty default.
_ADDED_DEFAULTS: tuple[Any, ...] = (None, False, {}, [])


def _only_adds(original: Any, written: Any, where: str = "") -> None:
    """`written` holds every key and value of `original`; it may only add keys (schema_version, defaults)."""
    if isinstance(original, dict):
        assert isinstance(written, dict), where
        for key, value in original.items():
            assert key in written, f"{where}.{key} dropped"
            _only_adds(value, written[key], f"{where}.{key}")
        for key in set(written) - set(original):
            assert key == "schema_version" or written[key] in _ADDED_DEFAULTS, f"{where}.{key} added with a value"
    elif isinstance(original, list):
        assert isinstance(written, list) and len(written) == len(original), where
        for index, (a, b) in enumerate(zip(original, written, strict=True)):
            _only_adds(a, b, f"{where}[{index}]")
    else:
        assert written == original, where


# Every committed report folder: the latest run's and the earlier ones the README's results table links.
FOLDERS = ("reports/default", "reports/xeon/default", "reports/zen4/default", "reports/avx2/default")
COMMITTED_FILES = [(f, n) for f in FOLDERS for n in sorted(REPORTS) if (REPO / f / f"{n}.json").is_file()]


@pytest.mark.parametrize(("folder", "name"), COMMITTED_FILES)
def test_committed_reports_validate_and_round_trip(folder: str, name: str) -> None:
    model = REPORTS[name]
    text = (REPO / folder / f"{name}.json").read_text()
    report = model.model_validate_json(text)
    assert model.model_validate_json(report.model_dump_json()) == report
    _only_adds(json.loads(text), json.loads(report.model_dump_json()))


@pytest.mark.parametrize("folder", FOLDERS)
def test_committed_results_are_what_the_report_code_derives_from_bench_and_load(folder: str) -> None:
    from textclf_benchmarks.markdown import render
    from textclf_benchmarks.report import confidence_figures, headline, speedups
    from textclf_benchmarks.schema import DriftBench, ExplainReport

    committed = REPO / folder

    def read(name: str, model: type[BaseModel]) -> Any:
        return load_report(committed / name, model) if (committed / name).is_file() else None

    bench, load, results = read("bench.json", BenchReport), read("load.json", LoadReport), read("results.json", Results)
    gpu, bulk = read("bench-cuda.json", BenchReport), read("bulk.json", BulkReport)
    explain, drift = read("explain.json", ExplainReport), read("drift.json", DriftBench)
    # When the report code changes, `textclf report` (it reads only the folder's json files) refreshes these.
    stale = f"{folder} is stale: run `textclf report` and commit results.json and report.md"
    # The confidence figures come from the run's manifest, which the committed report folder does not hold.
    derived = headline(bench, load, bulk, explain, drift).model_copy(update=confidence_figures(results.confidence))
    assert derived == results.headline, stale
    assert results.bulk == bulk, stale
    assert speedups(bench) == results.speedups, stale
    assert results.http == load, stale
    if gpu is not None:
        assert results.gpu == gpu, stale
    assert render(results) == (committed / "report.md").read_text(), stale


def test_manifest_round_trips_with_the_same_json(tmp_path: Path) -> None:
    update_manifest(tmp_path, train_section(), config={"run": "x"})
    manifest = update_manifest(tmp_path, export_section())
    text = (tmp_path / "manifest.json").read_text()
    assert Manifest.model_validate_json(text) == manifest == read_manifest(tmp_path)
    assert text == manifest.to_json()
    validate_against_schema(json.loads(text), "manifest.schema.json")


def _written_manifest(tmp_path: Path) -> dict[str, Any]:
    update_manifest(tmp_path, train_section())
    update_manifest(tmp_path, export_section())
    data: dict[str, Any] = json.loads((tmp_path / "manifest.json").read_text())
    return data


def test_missing_field_names_the_file_field_and_version(tmp_path: Path) -> None:
    data = _written_manifest(tmp_path)
    del data["export"]["variants"]["fp32"]["passed"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as failure:
        read_manifest(tmp_path)
    message = str(failure.value)
    assert message == f"{tmp_path / 'manifest.json'} (schema_version 1): export.variants.fp32.passed: field required"


def test_unknown_key_and_wrong_type_are_refused(tmp_path: Path) -> None:
    data = _written_manifest(tmp_path)
    data["export"]["serving_varaint"] = "fp32"
    data["train"]["metrics"]["test"]["accuracy"] = "high"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError) as failure:
        read_manifest(tmp_path)
    message = str(failure.value)
    assert "train.metrics.test.accuracy: input should be a valid number" in message
    assert "export.serving_varaint: unknown key" in message


def test_other_schema_version_has_its_own_message(tmp_path: Path) -> None:
    data = _written_manifest(tmp_path)
    data["schema_version"] = 2
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"manifest\.json: schema_version 2, this textclf reads 1"):
        read_manifest(tmp_path)
    del data["schema_version"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"\(no schema_version\): schema_version: field required"):
        read_manifest(tmp_path)


def test_foreign_report_fails_with_an_artifact_error() -> None:
    load = json.loads((COMMITTED / "load.json").read_text())
    del load["servers"]["bento"]["results"]["32"]["p99_ms"]
    where = r"load\.json \([^)]*schema_version[^)]*\): servers\.bento\.results\.32\.p99_ms"
    with pytest.raises(ArtifactError, match=where):
        parse_artifact(json.dumps(load), LoadReport, "load.json")
    with pytest.raises(ArtifactError, match="expected a JSON object"):
        parse_artifact("[]", Results, "results.json")
    with pytest.raises(ArtifactError, match="missing"):
        load_report(COMMITTED / "absent.json", Results)


def test_load_models_take_the_planned_phases_and_peer_fields() -> None:
    load = json.loads((COMMITTED / "load.json").read_text())
    bento = load["servers"]["bento"]
    bento["results"]["1-after-32"] = {**bento["results"]["1"], "cpu_s_per_request": 0.01, "engine_busy": 0.4}
    bento["settings"] = {"max_batch_tokens": 2048}
    report = LoadReport.model_validate(load)
    assert report.servers["bento"].results["1-after-32"].engine_busy == 0.4
    results = json.loads((COMMITTED / "results.json").read_text())
    results["headline"] |= {"http_rps_ratio_vs_peer_32_users": 1.5, "engine_busy_32_users": 0.9, "http_errors_max": 0}
    assert Results.model_validate(results).headline.http_errors_max == 0


def test_schema_command_writes_what_the_models_declare(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SCHEMAS)
    for name, schema in json_schemas().items():
        written = json.loads((tmp_path / name).read_text())
        assert written == schema
        jsonschema.Draft202012Validator.check_schema(written)
        committed = json.loads((SCHEMAS_DIR / name).read_text())
        assert committed == written, f"schemas/{name} is stale: run `textclf schema` and commit it"


@pytest.mark.parametrize(("folder", "name"), COMMITTED_FILES)
def test_committed_reports_validate_against_the_json_schemas(folder: str, name: str) -> None:
    document = json.loads((REPO / folder / f"{name}.json").read_text())
    schema = f"{SCHEMA_OF.get(name, name)}.schema.json"
    validate_against_schema(document, schema)
    del document["run"]
    with pytest.raises(jsonschema.ValidationError, match="'run' is a required property"):
        validate_against_schema(document, schema)


def test_schema_modules_import_without_torch_or_transformers() -> None:
    assert_imports_without(
        [
            "textclf.artifacts.schema",
            "textclf.artifacts.manifest",
            "textclf.inference.runtime",
            "textclf.artifacts.bento",
            "textclf_cli.app",
        ],
        ["torch", "transformers", "optimum", "datasets"],
    )


def test_an_export_section_of_the_routing_era_loads_without_its_route(tmp_path: Path) -> None:
    # The keys an export before one engine per machine wrote (d5797dc): shape timings, plans timed as served, and a
    # route with a repeat rule and a length rule; the variants' sample counts.
    data = _written_manifest(tmp_path)
    route = {"variant": "openvino-int8", "max_short_tokens": 53, "max_short_length": 0}
    route |= {"envelope_min": 1.0, "envelope_min_unrouted": 0.57, "long_on_repeat": True}
    timing = {"case": "b1-s16", "batch": 1, "seq_len": 16, "calls": 1, "ms": {"fp32": 1.2}, "repeat_ms": None}
    plan = {"label": "fp32", "serving": "fp32", "route": None, "modeled_envelope": 1.0, "measured_envelope": 0.9}
    data["export"] |= {"serving_route": route, "shape_timings": [timing], "plans": [plan], "plan_timings": [timing]}
    data["export"]["variants"]["fp32"] |= {"samples_b1": 40, "samples_b32": 12, "latency_ms": 2.0}
    data["export"]["variants"]["fp32"]["batch32_ms_per_text"] = 0.5
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.export is not None
    export = manifest.export
    assert export.ignored_route == "openvino-int8" and export.long_route is None
    assert export.served_variants() == ["fp32"]  # the serving variant alone
    assert export.variants["fp32"].serving_cost() == pytest.approx(1.0)  # √(2.0 × 0.5): the two cases it had
    assert "serving_route" not in manifest.to_json() and "samples_b1" not in manifest.to_json()
    # Without a route to ignore, an older section is read quietly.
    del data["export"]["serving_route"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    quiet = read_manifest(tmp_path)
    assert quiet is not None and quiet.export is not None and quiet.export.ignored_route is None
