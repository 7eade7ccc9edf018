"""The try-it page at `/` and its two assets under `/ui/`: static files shipped inside the Bento.

Served by the guard itself (no extra dependency, no framework): the page calls the same `POST /predict` and
`GET /model` as any client.
"""

from __future__ import annotations

import functools
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
# URL path → (file, content type). Only these are served: nothing else under the folder is reachable.
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
}


def page(path: str) -> tuple[bytes, str] | None:
    """The body and content type of a page, or None when `path` is not one."""
    entry = PAGES.get(path)
    if entry is None:
        return None
    name, content_type = entry
    return _read(name), content_type


@functools.cache  # keyed by the few names in PAGES only: read once, then kept
def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()
