"""What every `textclf` command shares: the options, loading the config, and one-line errors with exit code 2."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from textclf.config import load_config
from textclf.errors import TextclfError
from textclf_benchmarks.config import BenchmarkConfig

logger = logging.getLogger(__name__)
console = Console(stderr=True)


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (default: configs/default.yaml).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one key: section.key=value (repeatable)."),
]
RunOption = Annotated[str | None, typer.Option("--run", help="Run name (artifacts/<run>); same as --set run=NAME.")]


def load_cfg(config: Path | None, overrides: list[str] | None, run: str | None) -> BenchmarkConfig:
    items = list(overrides or [])
    if run is not None:
        items.append(f"run={run}")
    # Every command validates every section, `bench` included: a typo anywhere is named before any work starts.
    return load_config(config, items, model=BenchmarkConfig)


def fail(exc: BaseException) -> None:
    # escape: a message may hold brackets that are not markup (pip install -e '.[tracking]').
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def stage() -> Iterator[None]:
    """Around a command: the project's own errors become one line and exit code 2 (no traceback)."""
    try:
        yield
    except TextclfError as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]; completed artifacts and the manifest are unchanged")
        raise typer.Exit(code=130) from None
