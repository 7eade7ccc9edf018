"""The house's floors, read from the code itself: the core never imports a stage or the CLI, stages never import
each other, test helpers import no stage, and installing textclf claims no global `train`/`export`/`benchmarks`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each installed package's name and the folder it is built from (pyproject.toml's package-dir).
STAGES = {"textclf_train": "train", "textclf_export": "export", "textclf_benchmarks": "benchmarks"}
CLI = "textclf_cli"
ABOVE_THE_CORE = {*STAGES, *STAGES.values(), CLI, "cli"}


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every import in a file, lazy imports inside functions included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", [*python_files(REPO / "textclf"), REPO / "service.py"], ids=lambda p: p.name)
def test_the_core_and_the_service_import_no_stage_and_no_cli(path: Path) -> None:
    assert not imported_packages(path) & ABOVE_THE_CORE


@pytest.mark.parametrize(("package", "folder"), STAGES.items())
def test_a_stage_imports_the_core_and_no_other_stage(package: str, folder: str) -> None:
    others = ABOVE_THE_CORE - {package, folder}
    for path in python_files(REPO / folder):
        assert not imported_packages(path) & others, f"{path.relative_to(REPO)} imports another stage or the CLI"


def test_test_helpers_import_no_stage() -> None:
    helpers = [p for p in (REPO / "tests").glob("*.py") if not p.name.startswith("test_") and p.name != "conftest.py"]
    assert helpers
    for path in helpers:
        assert not imported_packages(path) & ABOVE_THE_CORE, f"{path.name} imports a stage"


def test_the_installed_project_claims_no_global_stage_names(tmp_path: Path) -> None:
    # Outside the checkout (no source folder on sys.path), only the project's own names resolve.
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({n: u.find_spec(n) is not None for n in "
        "['train', 'export', 'benchmarks', 'cli', 'textclf', 'textclf_cli', *" + repr(list(STAGES)) + "]}))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found == {
        "train": False,
        "export": False,
        "benchmarks": False,
        "cli": False,
        "textclf": True,
        "textclf_cli": True,
        **dict.fromkeys(STAGES, True),
    }
