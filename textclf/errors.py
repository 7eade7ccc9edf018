"""Error types with a message fit for a user, and the one table from error type to HTTP status.

The CLI prints a `TextclfError` on one line and exits non-zero; the service's guard answers every failure as
`{"error": message, "error_type": type}` with the status `ERROR_STATUS` gives that type.
"""

from __future__ import annotations

from typing import Final

# Every error type the HTTP API can answer, and its status. The guard, the OpenAPI document and docs/serving.md's
# error table all read this one mapping.
ERROR_STATUS: Final[dict[str, int]] = {
    "invalid_json": 400,
    "unauthorized": 401,
    "not_found": 404,  # another protocol's route names a model this server does not serve
    "method_not_allowed": 405,
    "request_timeout": 408,
    "too_many_texts": 413,
    "text_too_large": 413,
    "body_too_large": 413,
    "too_many_chunks": 413,  # on_overlength=chunk: a text or a request needs more windows than the limits allow
    "explain_too_large": 413,  # explain: more texts than serve.max_explain_texts, or more work than the queue holds
    "invalid_request": 422,
    "empty_text": 422,
    "text_too_long": 422,
    "overloaded": 503,
    "engine_unavailable": 503,  # the worker's engine thread died; the worker is being restarted
    "timeout": 504,
    "internal": 500,
}


class TextclfError(Exception):
    """Base class: an error whose message is shown to the user as is, without a traceback."""

    error_type = "internal"

    @property
    def status(self) -> int:
        """The HTTP status this error is answered with when it reaches a client."""
        return ERROR_STATUS.get(self.error_type, 500)


class RequestError(TextclfError):
    """A request the service refuses (or cannot answer); its type decides the status."""

    def __init__(self, error_type: str, message: str) -> None:
        if error_type not in ERROR_STATUS:
            raise ValueError(f"unknown error type {error_type!r}; add it to ERROR_STATUS")
        super().__init__(message)
        self.error_type = error_type


class ConfigError(TextclfError):
    """The configuration (file, --set override, or environment variable) is invalid."""

    error_type = "config_error"


class DataError(TextclfError):
    """The labelled data set cannot be used for training."""

    error_type = "data_error"


class ArtifactError(TextclfError):
    """An artifact is missing, incomplete or does not match the manifest."""

    error_type = "artifact_error"


class ExportError(TextclfError):
    """A model could not be exported or a variant failed in a way that stops the stage."""

    error_type = "export_error"


class InputError(TextclfError):
    """A file given to a command cannot be read as asked (format, missing file or column, malformed rows)."""

    error_type = "input_error"
