#!/usr/bin/env bash
# Build a local Debian bookworm + Python 3.11 base image for machines that reach Debian's package mirror but no
# container registry. Idempotent: an existing image is kept. On a machine with registry access this is not
# needed; the Bento uses the public python:3.11-slim image.
#
# usage: deploy/base-image.sh [IMAGE]   (default localhost/textclf-base:bookworm; ENGINE=podman|docker)
set -euo pipefail

image=${1:-localhost/textclf-base:bookworm}
engine=${ENGINE:-podman}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image already exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm (minbase + python3) into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null

# Package downloads during the image build may pass through a TLS proxy the host trusts: trust what it trusts.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi
# BentoML's Dockerfile installs packages with uv, and Debian's python has no pip on PATH: give it uv. Only its
# binary stays (the venv pip installed it into held another 11 MB: setuptools, pip).
chroot "$rootfs" sh -c 'python3 -m venv /tmp/uv && /tmp/uv/bin/pip install -q --no-cache-dir uv \
  && mv /tmp/uv/bin/uv /usr/local/bin/uv && rm -rf /tmp/uv /root/.cache'
# The image is never upgraded in place (it is rebuilt), and nothing at run time needs apt, perl, glibc's charset
# converters, docs, locales or the Python test/2to3 tooling: leave them out of every layer.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
       "$rootfs"/usr/lib/x86_64-linux-gnu/gconv "$rootfs"/usr/lib/x86_64-linux-gnu/perl-base \
       "$rootfs"/usr/share/zoneinfo "$rootfs"/usr/share/python-wheels \
       "$rootfs"/usr/lib/python3.11/lib2to3 "$rootfs"/usr/lib/python3.11/pydoc_data "$rootfs"/var/cache/debconf/* \
       "$rootfs"/usr/bin/perl* "$rootfs"/usr/share/perl* "$rootfs"/usr/bin/apt* "$rootfs"/usr/lib/apt \
       "$rootfs"/usr/lib/x86_64-linux-gnu/libapt-* "$rootfs"/var/lib/dpkg/info
find "$rootfs"/usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} +

tar -C "$rootfs" -c . | "$engine" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built $image ($("$engine" image inspect "$image" --format '{{.Size}}') bytes)"
