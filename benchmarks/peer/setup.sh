#!/usr/bin/env bash
# Peer server for the HTTP load benchmarks: michaelfeil's infinity-emb 0.0.78 in its own
# virtual environment: it pins numpy<2, uvicorn<0.33, typer<0.13, click<8.2 and rich<14, which clash
# with .venv.
#
#   bash benchmarks/peer/setup.sh          # creates .venv-peer at the repo root
#   PEER_VENV=/elsewhere bash benchmarks/peer/setup.sh
#
# Idempotent: does nothing when $PEER_VENV/.installed exists and is newer than this script.
#
# Serving a variant folder (model.onnx + config.json + tokenizer.json) with the optimum engine; run it
# from INSIDE the folder with --model-id . (an absolute --model-id makes optimum-onnx reject the file name):
#   cd artifacts/RUN/<variant> && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 \
#     INFINITY_HOME=/tmp/infinity-home HF_HOME=/tmp/infinity-home \
#     $PEER_VENV/bin/infinity_emb v2 --model-id . --engine optimum --device cpu --served-model-name textclf \
#       --url-prefix "" --no-model-warmup --onnx-disable-optimize --host 127.0.0.1 --port PORT
# --no-model-warmup is required: the warm-up sends 512-token texts (514 with [CLS]/[SEP]) that the
# optimum classifier does not truncate, so a 512-position BERT fails at startup.
set -euo pipefail

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
ROOT="$(cd "$(dirname "$SCRIPT")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
PEER_VENV="${PEER_VENV:-.venv-peer}"
case "$PEER_VENV" in /*) ;; *) PEER_VENV="$ROOT/$PEER_VENV" ;; esac
STAMP="$PEER_VENV/.installed"

if [[ -f "$STAMP" && "$STAMP" -nt "$SCRIPT" ]]; then
    echo "peer venv up to date: $PEER_VENV"
    exit 0
fi

"$PYTHON" -m venv "$PEER_VENV"
PIP=("$PEER_VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

# torch first, pinned: 2.13.0 is the CPU build on local disk; anything else pulls GBs of CUDA
# wheels. The constraints file keeps every later install from moving it.
# numpy<2 is infinity-emb 0.0.78's own requirement. Without it in the constraints, onnx 1.23.2 (from
# onnxruntime/optimum-onnx) pulls ml_dtypes 0.6.0, which needs numpy>=2, and pip upgrades numpy to 2.x
# over infinity's pin (it still runs, but `pip check` fails). With it pip picks ml_dtypes 0.5.4 and
# numpy 1.26.4; every requested pin resolves as given and `pip check` is clean.
CONSTRAINTS="$PEER_VENV/constraints.txt"
printf '%s\n' "torch==2.13.0" "numpy<2" > "$CONSTRAINTS"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==2.13.0"

"${PIP[@]}" install -q -c "$CONSTRAINTS" "infinity-emb[server,torch]==0.0.78"
"${PIP[@]}" install -q -c "$CONSTRAINTS" \
    "optimum[onnxruntime]==2.1.0" "optimum-onnx==0.1.0" "onnxruntime==1.32.0"

"${PIP[@]}" check
"$PEER_VENV/bin/python" -c "import infinity_emb, optimum.onnxruntime, onnxruntime, torch; import numpy; print('peer ok: infinity_emb', infinity_emb.__version__, 'onnxruntime', onnxruntime.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
touch "$STAMP"
