#!/usr/bin/env bash
# `make container` / `make container-gpu`: build the Bento into an OCI image with Docker when a daemon answers,
# else podman, else say plainly that no builder runs here.
#
# usage: deploy/container.sh cpu|gpu   (RUN=default, BIN=.venv/bin)
set -euo pipefail
flavour=${1:-cpu}
run=${RUN:-default}
bin=${BIN:-.venv/bin}
here=$(cd "$(dirname "$0")" && pwd)

if docker info >/dev/null 2>&1; then
  engine=docker
elif command -v podman >/dev/null 2>&1; then
  engine=podman
  # Inside a sandbox (a container itself) podman needs runc, host networking and cgroupfs: see containers.conf.
  if [ -z "${CONTAINERS_CONF:-}" ] && { [ -f /.dockerenv ] || [ -f /run/.containerenv ]; }; then
    export CONTAINERS_CONF="$here/containers.conf"
  fi
else
  echo "make container: no container builder runs here: no Docker daemon answers and podman is not installed" >&2
  echo "(apt-get install podman runc, or start Docker). The Bento itself is built: $bin/bentoml list" >&2
  exit 1
fi

registry_code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 https://registry-1.docker.io/v2/ || true)
if [ "$registry_code" = "401" ] || [ "$registry_code" = "200" ]; then has_registry=1; else has_registry=0; fi

if [ "$flavour" = "gpu" ]; then
  base=${TEXTCLF_BASE_IMAGE:-nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04}
  bentofile=bentofile.gpu.yaml
  bento=textclf-gpu
  if [ "$has_registry" = 0 ] && ! "$engine" image inspect "$base" >/dev/null 2>&1; then
    echo "make container-gpu: the CUDA base image $base is neither local nor reachable (no container registry" >&2
    echo "answers here). Pull it where a registry is reachable, or set TEXTCLF_BASE_IMAGE to a local CUDA image." >&2
    exit 1
  fi
else
  bentofile=bentofile.yaml
  bento=textclf
  if [ -n "${TEXTCLF_BASE_IMAGE:-}" ]; then
    base=$TEXTCLF_BASE_IMAGE
  elif [ "$has_registry" = 1 ]; then
    base=python:3.11-slim
  else
    echo "no container registry is reachable: building a local base image (deploy/base-image.sh)"
    base=localhost/textclf-base:bookworm
    ENGINE=$engine "$here/base-image.sh" "$base"
  fi
fi

echo "building Bento $bento on base image $base"
TEXTCLF_BASE_IMAGE=$base "$bin/textclf" build --run "$run" --bentofile "$bentofile"
"$bin/bentoml" containerize "$bento:latest" --backend "$engine" -t "$bento:latest"
size=$("$engine" image inspect "$bento:latest" --format '{{.Size}}')
echo "image $bento:latest: $((size / 1000000)) MB"
"$engine" history "$bento:latest" --format '{{.Size}}\t{{.CreatedBy}}' | grep -v '^0 B' | cut -c1-100
