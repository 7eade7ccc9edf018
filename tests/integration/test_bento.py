"""`textclf build`: the model store import and the built Bento (torch-free requirements, working service)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml
from typer.testing import CliRunner

from tests.serving import served
from textclf.config import Config
from textclf_cli.app import app

FORBIDDEN = ("torch", "transformers", "optimum", "datasets", "accelerate")


@pytest.fixture(scope="module")
def built(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(BENTOML_HOME, the built Bento's folder) for the tiny exported run."""
    home = tmp_path_factory.mktemp("bentoml-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_HOME", str(home))
        result = CliRunner().invoke(app, ["build", "--set", f"artifacts_root={exported_run.artifacts_root}"])
        assert result.exit_code == 0, result.output
        again = CliRunner().invoke(
            app, ["build", "--model-only", "--set", f"artifacts_root={exported_run.artifacts_root}"]
        )
        assert "model: textclf:default-" in again.output
    bentos = [p for p in (home / "bentos" / "textclf").iterdir() if p.name != "latest"]
    assert len(bentos) == 1
    return home, bentos[0]


def test_bento_requirements_are_runtime_only(built: tuple[Path, Path]) -> None:
    _, bento = built
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower().splitlines()
    names = {line.split("==")[0].split(">")[0].split("<")[0].strip() for line in requirements if line.strip()}
    assert {"tokenizers", "numpy", "bentoml"} <= names
    assert not names & set(FORBIDDEN), f"the Bento must not ship {names & set(FORBIDDEN)}"
    # The engine comes with the image's setup script (installed and trimmed in one layer:
    # textclf.artifacts.bento_image).
    scripts = [p.read_text() for p in (bento / "env" / "docker").glob("script__*")]
    assert len(scripts) == 1 and "uv pip install --no-cache onnxruntime==" in scripts[0]
    assert "openvino" not in scripts[0], "the tiny run serves ONNX Runtime alone"
    shipped = {p.relative_to(bento / "src").as_posix() for p in (bento / "src").rglob("*") if p.is_file()}
    assert "service.py" in shipped and "textclf/inference/runtime.py" in shipped and "configs/default.yaml" in shipped
    assert not any(p.startswith(("train/", "export/", "benchmarks/", "tests/")) for p in shipped)


def test_bento_references_the_imported_model(built: tuple[Path, Path]) -> None:
    home, bento = built
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    tags = [m["tag"] for s in info["services"] for m in s["models"]]
    assert len(tags) == 1 and tags[0].startswith("textclf:default-")
    version = tags[0].split(":")[1]
    stored = home / "models" / "textclf" / version
    assert (stored / "manifest.json").is_file()
    assert next(iter((stored / "onnx").iterdir())).joinpath("model.onnx").is_file()


def test_generated_dockerfile_exists(built: tuple[Path, Path]) -> None:
    _, bento = built
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM " in dockerfile
    assert "requirements.txt" in dockerfile


def test_built_bento_serves_predictions(built: tuple[Path, Path], tmp_path: Path) -> None:
    home, _ = built
    with served("textclf:latest", {"BENTOML_HOME": str(home)}, tmp_path / "serve.log") as url:
        response = requests.post(f"{url}/predict", json={"texts": ["a really good film"]}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()[0]["label"] in ("neg", "pos")
        assert response.headers["X-Model-Name"] == "textclf"
