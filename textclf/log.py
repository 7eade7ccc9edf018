"""Logging setup. Only entry points (the CLI, the service) call `setup_logging`."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once, with the level from the argument or ``TEXTCLF_LOG_LEVEL``."""
    chosen = (level or os.environ.get("TEXTCLF_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for noisy in ("urllib3", "filelock", "httpx", "datasets", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
