"""Optional API keys: `Authorization: Bearer <key>` on every route but the probes and the docs.

Keys come from `serve.api_keys` / `TEXTCLF_API_KEYS`: comma-separated keys, or the path of a file with one key
per line (blank lines and `#` comments ignored). They are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from textclf.errors import ConfigError

# Routes anyone may call: Kubernetes probes, the try-it page and the API documentation.
OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/", "/docs", "/docs.json", "/v2/health/live", "/v2/health/ready"}
)
# Open paths that classify when posted to: `POST /` is the Hugging Face task API, not the page.
CLASSIFYING_OPEN_PATHS = frozenset({"/"})
OPEN_PREFIXES = ("/static_content/", "/ui/")
METRICS_PATH = "/metrics"


def parse_api_keys(value: str | None) -> tuple[bytes, ...]:
    """The keys of a `serve.api_keys` value: a file path, or keys separated by commas; none when empty.

    Raises:
        ConfigError: a path to a missing or empty key file, or a key shorter than 16 characters.
    """
    if not value or not value.strip():
        return ()
    path = Path(value.strip()).expanduser()
    looks_like_path = value.strip().startswith(("/", "~", ".")) or "/" in value
    if looks_like_path and not path.is_file():  # a secret that was not mounted must not become the key itself
        raise ConfigError(f"serve.api_keys: no key file at {path}")
    if path.is_file():
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        keys = [line for line in lines if line and not line.startswith("#")]
        if not keys:
            raise ConfigError(f"serve.api_keys: the key file {path} holds no key")
    else:
        keys = [key.strip() for key in value.split(",") if key.strip()]
    short = [i for i, key in enumerate(keys) if len(key) < 16]
    if short:
        raise ConfigError(f"serve.api_keys: key #{short[0] + 1} is shorter than 16 characters; use a random key")
    return tuple(key.encode() for key in keys)


def needs_key(path: str, method: str = "GET", *, metrics_public: bool) -> bool:
    """Whether a request to `path` must carry a key (when keys are configured at all)."""
    if path in CLASSIFYING_OPEN_PATHS and method not in ("GET", "HEAD"):
        return True
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return False
    return not (path == METRICS_PATH and metrics_public)


def is_authorized(header: bytes | None, keys: tuple[bytes, ...]) -> bool:
    """Whether an `Authorization` header value carries one of the keys (every key compared, in constant time)."""
    if header is None:
        return False
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        return False
    token = token.strip()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(token, key)
    return matched


@dataclass(frozen=True)
class Access:
    """Who may call what: the API keys (none: the API is open) and whether /metrics needs one."""

    api_keys: tuple[bytes, ...] = ()
    metrics_public: bool = True

    def allows(self, path: str, method: str, authorization: bytes | None) -> bool:
        """Whether a request may pass: no keys configured, an open route, or a right key in `authorization`."""
        if not self.api_keys or not needs_key(path, method, metrics_public=self.metrics_public):
            return True
        return is_authorized(authorization, self.api_keys)
