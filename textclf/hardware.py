"""What machine this is: CPU model, cores, ISA flags, GPU. Recorded next to every measured number."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return {}
    first: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            break  # the first processor block describes them all
        key, _, value = line.partition(":")
        first[key.strip()] = value.strip()
    return first


def cpu_flags() -> set[str]:
    """Lower-case CPU feature flags (x86 `flags`, arm `Features`)."""
    info = _cpuinfo()
    return set((info.get("flags") or info.get("Features") or "").lower().split())


def isa_preset() -> str:
    """The onnxruntime quantization preset that fits this CPU: avx512_vnni, avx512, avx2 or arm64."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def has_int8_dot_products(isa: dict[str, bool]) -> bool:
    """VNNI or AMX: int8 GEMMs several times faster than fp32 ones (given `Machine.isa`)."""
    return any(isa.get(flag) for flag in INT8_DOT_PRODUCT_FLAGS)


def usable_cores() -> int:
    """Cores this process may run on (respects taskset / cgroup CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, or None (no torch import: nvidia-smi only)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = out.stdout.strip().splitlines()
    return names[0] if names else None


def machine_info() -> dict[str, Any]:
    """The record that travels with every benchmark number and export timing."""
    flags = cpu_flags()
    return {
        "cpu_model": _cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": usable_cores(),
        "isa": {flag: flag in flags for flag in _ISA_FLAGS},
        "quantization_preset": isa_preset(),
        "gpu": gpu_name(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
