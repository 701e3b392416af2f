"""The project's own exceptions: each carries a message a user can act on."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for expected, user-facing failures (the CLI exits non-zero with the message)."""

    exit_code = 1


class ConfigError(PipelineError):
    """The configuration file is missing, unreadable or holds impossible values."""

    exit_code = 2


class DataError(PipelineError):
    """The input data cannot be read or does not meet the data contract."""

    exit_code = 2

    def __init__(self, message: str, report: str | None = None) -> None:
        super().__init__(message)
        self.report = report or message


class TrainingError(PipelineError):
    """Training failed (for instance the loss diverged)."""


class TrackingError(PipelineError):
    """The MLflow tracking server or registry could not be reached or refused a write."""


class RegistryError(PipelineError):
    """A registry request names an unknown model, version or alias, or cannot be honoured."""


class ModelFormatError(PipelineError):
    """A saved model's directory is in a format (or format version) this code does not read."""


class ModelIntegrityError(ModelFormatError):
    """A saved model's files changed since it was logged (its manifest), or hold what no model could have saved:
    non-finite numbers, weights not shaped as its constructor arguments say, crossed bands, files its format
    version does not have. Exit 2, as for any bad input: the message names the file and the rule."""

    exit_code = 2


class OutputError(PipelineError):
    """An output path is refused: it exists (without overwrite), or it is the tracking store or a project file."""

    exit_code = 2


class OrchestrationError(PipelineError):
    """Prefect's API server for the command could not be started or reached."""
