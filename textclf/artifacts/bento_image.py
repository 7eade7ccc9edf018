"""How a CPU image of the Bento installs its engines: each engine's wheel, minus what serving never loads.

Measured on the wheels this project pins (onnxruntime 1.32.0, openvino 2026.4.1), installed sizes:

- openvino installs 180 MB. Running an IR (`model.xml` + `model.bin`) on the CPU plugin loads the core library, the
  CPU plugin, TBB and the IR frontend; the GPU plugin (40 MB) and its kernel tuning cache (`libs/cache.json`,
  8.5 MB), the NPU plugin (11 MB), the ONNX / TensorFlow / TFLite / PaddlePaddle / PyTorch / JAX / GGUF frontends
  (20 MB of libraries and their Python packages), the C++ headers, CMake files, the C API library, type stubs and
  the conversion and benchmark tools are for other devices, model formats or programs. Kept: ~91 MB.
- onnxruntime installs 80 MB. Its Python binding (`onnxruntime_pybind11_state`, 36 MB) holds the runtime itself; the
  C API library beside it (`libonnxruntime.so.*`, 34 MB, for C/C++ programs: the binding does not link or load it)
  and the Python tools of model conversion (`transformers`, `quantization`, `tools`: export uses them, the Bento
  never) are left out. Kept: 36 MB.

An image must never hold those files in any layer: a file deleted in a later `RUN` still weighs in the layer that
installed it. So in a CPU image these engines are not in the Bento's Python packages: the bentofile's
`docker.setup_script` (which BentoML runs right after the Python packages, as root, in one `RUN`) installs them,
removes the unneeded files in the same step, then proves each engine still works (an IR read through the IR
frontend, compiled and run on the CPU; ONNX Runtime's binding loaded with its CPU provider), so a trimmed package
that cannot serve fails the image build, not the first request.
"""

from __future__ import annotations

import shlex
from importlib import metadata

# Relative to each package's folder; run there by the setup script.
TRIM_COMMANDS: dict[str, tuple[str, ...]] = {
    "onnxruntime": (
        "rm -rf transformers quantization tools",
        "rm -f capi/libonnxruntime.so*",  # the C API library; the binding's own copy of the runtime stays
    ),
    "openvino": (
        # libs/cache.json is the GPU plugin's kernel tuning cache; tools/ holds ovc and benchmark_app (openvino's
        # __init__ imports ovc only if present); torch/ is torch.compile's backend, which needs the PyTorch frontend.
        "rm -rf libs/libopenvino_intel_gpu_plugin.so libs/libopenvino_intel_npu_plugin.so libs/cache.json"
        " include cmake tools torch",
        # Every frontend but the IR one, by pattern: a newer wheel's extra frontend goes too.
        "for lib in libs/libopenvino_*_frontend.so*; do",
        '  case "$lib" in *_ir_frontend.so*) ;; *) rm -f "$lib" ;; esac',
        "done",
        # openvino/frontend/ keeps its __init__ and frontend.py (openvino imports them); each framework's package goes.
        "find frontend -mindepth 1 -maxdepth 1 -type d ! -name __pycache__ -exec rm -rf {} +",
        # The C API library (the Python binding links libopenvino.so itself) and the type stubs (for type checkers).
        "rm -f libs/libopenvino_c.so*",
        "find . -name '*.pyi' -delete",
    ),
}
CONSOLE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime_test",),
    "openvino": ("ovc", "benchmark_app"),  # they point into the removed tools/
}
# Plain python run in the image after trimming (the Bento's source is copied after this step).
CHECKS: dict[str, str] = {
    "onnxruntime": """\
import onnxruntime as ort
assert "CPUExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
ort.SessionOptions()
print("onnxruntime", ort.__version__, "loads its CPU provider")
""",
    "openvino": """\
import os, tempfile
import numpy as np
import openvino as ov
import openvino.opset13 as ops
x = ops.parameter([1, 4], np.float32, name="x")
path = os.path.join(tempfile.mkdtemp(), "check.xml")
ov.save_model(ov.Model([ops.relu(x)], [x], "check"), path)
core = ov.Core()
compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
out = compiled.create_infer_request().infer({"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)})
assert np.allclose(out[compiled.output(0)], [[0.0, 2.0, 0.0, 4.0]]), out
assert "CPU" in core.available_devices
print("openvino", ov.get_version(), "reads, compiles and runs an IR on the CPU")
""",
}
TRIMMED_PACKAGES = tuple(TRIM_COMMANDS)


def setup_script(packages: list[str]) -> str:
    """The image's setup script for `packages` (pip names from TRIMMED_PACKAGES): install them pinned to this
    environment's versions, trim each in the same layer, check each."""
    unknown = sorted(set(packages) - set(TRIM_COMMANDS))
    if unknown:
        raise ValueError(f"no image recipe for {unknown}; known: {', '.join(TRIM_COMMANDS)}")
    requirements = " ".join(shlex.quote(f"{name}=={metadata.version(name)}") for name in packages)
    lines = [
        "#!/bin/sh",
        "# Generated by `textclf build` (textclf/bento_image.py): the engines, installed and trimmed to what serving",
        "# loads, in one image layer.",
        "set -eu",
        # No cache: the layer keeps the installed files only, not uv's copy of the wheels and the index metadata.
        f"uv pip install --no-cache {requirements}",
        "site=$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')",
    ]
    for name in packages:
        scripts = " ".join(f'"$VIRTUAL_ENV/bin/{script}"' for script in CONSOLE_SCRIPTS[name])
        lines += [
            f'before=$(du -sm "$site/{name}" | cut -f1)',
            f'cd "$site/{name}"',
            *TRIM_COMMANDS[name],
            f"rm -f {scripts}",
            f'echo "{name}: $before MB installed, $(du -sm "$site/{name}" | cut -f1) MB kept"',
            "python - <<'EOF'",
            CHECKS[name].rstrip("\n"),
            "EOF",
        ]
    return "\n".join(lines) + "\n"
