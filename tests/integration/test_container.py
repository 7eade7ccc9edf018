"""The Bento's generated container build: base image, no compilers, runtime-only requirements; and (slow) a real
image built with podman or Docker that answers /readyz and /predict."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.serving import loopback_port
from textclf.config import Config

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPILERS = ("build-essential", "gcc", "g++", "clang", "git ")
FORBIDDEN = ("torch", "transformers", "optimum", "scipy")  # the serve image: no training stack, no scipy


def _build(cfg: Config, home: Path, bentofile: str, base_image: str) -> Path:
    """`textclf build` in a subprocess (the service reads TEXTCLF_BASE_IMAGE when it is imported)."""
    env = {**os.environ, "BENTOML_HOME": str(home), "TEXTCLF_BASE_IMAGE": base_image}
    command = [str(BIN / "textclf"), "build", "--bentofile", bentofile, "--set", f"artifacts_root={cfg.artifacts_root}"]
    result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return next(p for p in (home / "bentos").glob("*/*") if p.name != "latest")


@pytest.fixture(scope="module")
def cpu_bento(exported_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(exported_run, tmp_path_factory.mktemp("home"), "bentofile.yaml", "registry.example/base:3.11")


def test_dockerfile_uses_the_configured_base_image(cpu_bento: Path) -> None:
    dockerfile = (cpu_bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM registry.example/base:3.11 AS base-container" in dockerfile


def test_dockerfile_installs_no_compiler(cpu_bento: Path) -> None:
    dockerfile = (cpu_bento / "env" / "docker" / "Dockerfile").read_text()
    assert "apt-get install" not in dockerfile
    for compiler in COMPILERS:
        assert compiler not in dockerfile, compiler
    assert "USER bentoml" in dockerfile, "the service runs as a non-root user"


def test_image_requirements_are_runtime_only(cpu_bento: Path) -> None:
    requirements = (cpu_bento / "env" / "python" / "requirements.txt").read_text().lower()
    assert "bentoml==" in requirements and "onnxruntime" not in requirements
    # The engine is installed by the setup script, right after the packages, trimmed in the same RUN.
    dockerfile = (cpu_bento / "env" / "docker" / "Dockerfile").read_text()
    install = dockerfile.index("pip install -r $BENTO_PATH/env/python/requirements.txt")
    (script,) = (cpu_bento / "env" / "docker").glob("script__*")
    assert dockerfile.index(f"./env/docker/{script.name}") > install
    assert "uv pip install --no-cache onnxruntime==" in script.read_text()
    assert "ARG UV_NO_CACHE=1" in dockerfile, "the package layer keeps no uv cache"
    for name in FORBIDDEN:
        assert name not in requirements, name


def test_gpu_flavour_ships_onnxruntime_gpu_and_selects_cuda(exported_run: Config, tmp_path: Path) -> None:
    bento = _build(
        exported_run, tmp_path / "home", "bentofile.gpu.yaml", "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
    )
    requirements = (bento / "env" / "python" / "requirements.txt").read_text().lower()
    assert "onnxruntime-gpu" in requirements and "onnxruntime==" not in requirements
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04" in dockerfile
    assert "TEXTCLF_USE_CUDA" in dockerfile or "TEXTCLF_USE_CUDA" in (bento / "bento.yaml").read_text()


def _engine() -> str | None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    return "podman" if shutil.which("podman") else None


@pytest.mark.slow
def test_container_builds_small_runs_and_answers(exported_run: Config, tmp_path: Path) -> None:
    engine = _engine()
    if engine is None:
        pytest.skip("no container builder runs here (no Docker daemon, no podman)")
    env = dict(os.environ)
    if engine == "podman" and (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()):
        env["CONTAINERS_CONF"] = str(PROJECT / "deploy" / "containers.conf")
    base = "localhost/textclf-base:bookworm"
    subprocess.run([str(PROJECT / "deploy" / "base-image.sh"), base], env={**env, "ENGINE": engine}, check=True,
                   timeout=900)  # fmt: skip
    home = tmp_path / "home"
    _build(exported_run, home, "bentofile.yaml", base)
    tag = f"textclf-test:{int(time.time())}"
    subprocess.run([str(BIN / "bentoml"), "containerize", "textclf:latest", "--backend", engine, "-t", tag],
                   env={**env, "BENTOML_HOME": str(home)}, check=True, capture_output=True, timeout=900)  # fmt: skip
    name = tag.replace(":", "-")
    port = loopback_port()
    try:
        size = int(subprocess.run([engine, "image", "inspect", tag, "--format", "{{.Size}}"], env=env,
                                  capture_output=True, text=True, check=True).stdout)  # fmt: skip
        assert size <= 500_000_000, f"image is {size / 1e6:.0f} MB"
        run = [engine, "run", "-d", "--rm", "--name", name]
        run += ["--network", "host"] if engine == "podman" else ["-p", f"127.0.0.1:{port}:{port}"]
        subprocess.run([*run, tag, "serve", "--port", str(port)], env=env, check=True, capture_output=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
        response = requests.post(f"{url}/predict", json={"texts": ["a really good film"]}, timeout=30)
        assert response.status_code == 200 and response.json()[0]["label"] in ("neg", "pos")
        user = subprocess.run([engine, "exec", name, "id", "-u"], env=env, capture_output=True, text=True).stdout
        assert user.strip() != "0", "the container runs as a non-root user"
    finally:
        subprocess.run([engine, "rm", "-f", name], env=env, capture_output=True)
        subprocess.run([engine, "rmi", "-f", tag], env=env, capture_output=True)
