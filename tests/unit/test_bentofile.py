"""The Bento ships only the engines its served variants run on, and a CPU image installs them trimmed to what
serving loads, in the layer that installs them."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from textclf.artifacts.bento import BENTOFILE, SETUP_SCRIPT, bentofile_for
from textclf.artifacts.bento_image import setup_script


def _names(spec: dict) -> set[str]:  # type: ignore[type-arg]
    return {p.split("==")[0].split(">")[0] for p in spec["python"]["packages"]}


def test_each_engine_alone_ships_alone_through_the_setup_script() -> None:
    ort, installed = bentofile_for({"onnxruntime"})
    assert installed == ["onnxruntime"] and ort["docker"]["setup_script"] == SETUP_SCRIPT
    assert "onnxruntime" not in _names(ort) and "openvino" not in _names(ort)
    assert {"tokenizers", "numpy"} <= _names(ort)
    ov, installed = bentofile_for({"openvino"})
    assert installed == ["openvino"] and not {"onnxruntime", "openvino"} & _names(ov)


def test_a_route_across_engines_installs_both_and_the_gpu_flavour_keeps_its_own_onnxruntime() -> None:
    assert bentofile_for({"onnxruntime", "openvino"})[1] == ["onnxruntime", "openvino"]
    gpu, installed = bentofile_for({"onnxruntime"}, BENTOFILE.with_name("bentofile.gpu.yaml"))
    assert "onnxruntime-gpu" in _names(gpu) and "onnxruntime" not in _names(gpu)
    assert installed == [] and "setup_script" not in gpu.get("docker", {})
    routed_gpu, installed = bentofile_for({"onnxruntime", "openvino"}, BENTOFILE.with_name("bentofile.gpu.yaml"))
    assert installed == ["openvino"] and "onnxruntime-gpu" in _names(routed_gpu)


def test_the_setup_script_installs_pinned_without_cache_and_checks_each_engine() -> None:
    script = setup_script(["onnxruntime", "openvino"])
    install = next(line for line in script.splitlines() if line.startswith("uv pip install"))
    assert "--no-cache" in install
    for name in ("onnxruntime", "openvino"):
        assert f"{name}=={metadata.version(name)}" in install
    assert 'compile_model(core.read_model(path), "CPU"' in script and "get_available_providers()" in script
    with pytest.raises(ValueError, match="no image recipe"):
        setup_script(["onnxruntime-gpu"])


def _touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")


OPENVINO_KEPT = (
    "__init__.py",
    "libs/libopenvino.so.2641",
    "libs/libopenvino_intel_cpu_plugin.so",
    "libs/libopenvino_ir_frontend.so.2641",
    "libs/libtbb.so.12",
    "frontend/__init__.py",
    "frontend/frontend.py",
    "opset13/__init__.py",
)
OPENVINO_DROPPED = (
    "libs/libopenvino_intel_gpu_plugin.so",
    "libs/libopenvino_intel_npu_plugin.so",
    "libs/cache.json",
    "libs/libopenvino_onnx_frontend.so.2641",
    "libs/libopenvino_pytorch_frontend.so.2641",
    "libs/libopenvino_tensorflow_lite_frontend.so.2641",
    "libs/libopenvino_someday_frontend.so.2750",  # a frontend a newer wheel may add
    "frontend/pytorch/__init__.py",
    "frontend/onnx/__init__.py",
    "include/openvino/core.hpp",
    "tools/ovc/__init__.py",
    "libs/libopenvino_c.so.2641",
    "_ov_api.pyi",
)
ORT_KEPT = ("__init__.py", "capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so", "capi/_pybind_state.py")
ORT_DROPPED = ("capi/libonnxruntime.so.1.32.0", "transformers/optimizer.py", "quantization/quantize.py")


def test_the_trim_keeps_what_serving_loads_and_drops_the_rest(tmp_path: Path) -> None:
    # The script's own trim, run on a fake site-packages (no install, no check): what stays and what goes.
    site, bin_dir = tmp_path / "site", tmp_path / "venv" / "bin"
    _touch(site / "openvino", *OPENVINO_KEPT, *OPENVINO_DROPPED)
    _touch(site / "onnxruntime", *ORT_KEPT, *ORT_DROPPED)
    _touch(bin_dir, "ovc", "benchmark_app", "uvicorn")
    script = setup_script(["onnxruntime", "openvino"])
    lines, skipping = [], False
    for line in script.splitlines():
        if line.startswith(("uv pip install", "site=")):
            continue
        skipping = skipping or line.startswith("python - <<")
        if not skipping:
            lines.append(line)
        skipping = skipping and line != "EOF"
    env = {"PATH": "/usr/bin:/bin", "VIRTUAL_ENV": str(tmp_path / "venv"), "site": str(site)}
    subprocess.run(["sh", "-c", "\n".join(lines)], env=env, check=True, capture_output=True, timeout=30)
    assert all((site / "openvino" / p).exists() for p in OPENVINO_KEPT)
    assert not any((site / "openvino" / p).exists() for p in OPENVINO_DROPPED)
    assert all((site / "onnxruntime" / p).exists() for p in ORT_KEPT)
    assert not any((site / "onnxruntime" / p).exists() for p in ORT_DROPPED)
    assert sorted(p.name for p in bin_dir.iterdir()) == ["uvicorn"]


@pytest.mark.parametrize("name", ["bentofile.yaml", "bentofile.gpu.yaml"])
def test_the_bento_ships_every_module_of_the_core(name: str) -> None:
    # BentoML matches `include` as gitignore-style patterns: `textclf/*.py` does not reach a subpackage.
    import pathspec
    import yaml

    includes = yaml.safe_load((BENTOFILE.parent / name).read_text())["include"]
    spec = pathspec.PathSpec.from_lines("gitwildmatch", includes)
    modules = [p.relative_to(BENTOFILE.parent).as_posix() for p in (BENTOFILE.parent / "textclf").rglob("*.py")]
    assert modules and [m for m in modules if not spec.match_file(m)] == []
