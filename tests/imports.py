"""Check, in a fresh interpreter, that modules import while some packages are unavailable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def assert_imports_without(modules: list[str], blocked: list[str]) -> None:
    """Import `modules` in a new Python where every package in `blocked` raises ImportError."""
    code = (
        "import sys\n"
        f"for name in {tuple(blocked)!r}:\n"
        "    sys.modules[name] = None  # any import of them raises ImportError\n"
        f"import {', '.join(modules)}\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
