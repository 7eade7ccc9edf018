#!/usr/bin/env bash
# `textclf bench --device cuda` on a GPU machine that has Python, a CUDA PyTorch and transformers but neither this
# project's .venv nor a package index, and that receives at most ~64 MB of files (the run's fp32 checkpoint alone
# is ~91 MB).
#
#   bash benchmarks/gpu/bench.sh pack [RUN]        # here: wheels into .whl/, the run's files into artifacts/gpu-carry/
#   bash benchmarks/gpu/bench.sh run OUT_DIR [RUN]  # there, from the repo root, with .whl/ and artifacts/gpu-carry/
#
# pack stores the checkpoint's weights as fp16 (half the size); run rebuilds artifacts/RUN/checkpoint from them,
# cast back to fp32. The fp16 engines therefore see exactly the weights they would see from the real checkpoint
# (model.half() rounds the same way); the fp32 engines see those rounded weights, which changes no shape or kernel,
# hence no timing (on the default run it moved no test-set label and no logit by more than 0.007).
# run writes OUT_DIR/bench-cuda.json (and bench.log). torch.compile on the GPU can take minutes: the sweep with it is
# given $COMPILE_TIMEOUT seconds (default 330), after which the sweep runs again without it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CARRY=artifacts/gpu-carry
WHEELS=(pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing_extensions==4.16.0 typer==0.29.2)

pack() {
    local run="${1:-default}" python="${PYTHON:-.venv/bin/python}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    rm -rf "$CARRY" && mkdir -p "$CARRY/checkpoint"
    cp "artifacts/$run/manifest.json" "artifacts/$run/eval_texts.jsonl" "$CARRY/"
    find "artifacts/$run/checkpoint" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} "$CARRY/checkpoint/" \;
    OMP_NUM_THREADS=1 "$python" - "artifacts/$run/checkpoint" "$CARRY/checkpoint" <<'EOF'
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

source, target = Path(sys.argv[1]), Path(sys.argv[2])
for path in source.glob("*.safetensors"):
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file(half, target / path.name, metadata=metadata)
    change = max((v.float() - tensors[k].float()).abs().max().item() for k, v in half.items())
    print(f"{path.name}: fp16 copy, largest weight change {change:.2e}")
EOF
    du -sh .whl "$CARRY"
}

run() {
    local out="$1" run="${2:-default}" python="${PYTHON:-python3}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl
    fi
    export PYTHONPATH="/tmp/site:$ROOT" PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
    mkdir -p "artifacts/$run/checkpoint"
    cp "$CARRY/manifest.json" "$CARRY/eval_texts.jsonl" "artifacts/$run/"
    cp "$CARRY"/checkpoint/* "artifacts/$run/checkpoint/"
    "$python" - "artifacts/$run/checkpoint" <<'EOF'
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

for path in Path(sys.argv[1]).glob("*.safetensors"):
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in load_file(path).items()}
    save_file(tensors, path, metadata=metadata)
import onnxruntime, pydantic, tokenizers, transformers, typer

gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print("torch", torch.__version__, "cuda", torch.version.cuda, gpu,
      "| transformers", transformers.__version__, "| tokenizers", tokenizers.__version__,
      "| onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers(),
      "| pydantic", pydantic.__version__, "| typer", typer.__version__)
EOF
    local textclf=("$python" -c 'import sys; from textclf_cli.app import app; sys.argv[0] = "textclf"; app()')
    local report="reports/$run/bench-cuda.json"
    rm -f "$report"
    if timeout "${COMPILE_TIMEOUT:-330}" "${textclf[@]}" bench --run "$run" --device cuda 2>&1 | tee "$out/bench.log" \
        && [[ -f "$report" ]]; then
        cp "$report" "$out/bench-cuda.json"
    else
        echo "the sweep with torch.compile did not finish; again without it" | tee -a "$out/bench.log"
        "${textclf[@]}" bench --run "$run" --device cuda --set bench.use_torch_compile=false 2>&1 \
            | tee -a "$out/bench.log"
        cp "$report" "$out/bench-cuda.json"
    fi
}

case "${1:-}" in
pack) shift && pack "$@" ;;
run) shift && run "$@" ;;
*) sed -n '2,15p' "$0" && exit 2 ;;
esac
