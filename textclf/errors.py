"""Error types with a message fit for a user: the CLI prints them on one line and exits non-zero."""

from __future__ import annotations


class TextclfError(Exception):
    """Base class: an error whose message is shown to the user as is, without a traceback."""

    error_type = "textclf_error"


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
