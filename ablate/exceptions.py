"""Typed errors: anything a user can cause is an AblateError and becomes one clear line."""

from __future__ import annotations

__all__ = [
    "AblateError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TrainingDiverged",
    "Pruned",
]


class AblateError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2."""


class ConfigError(AblateError, ValueError):
    """A configuration value, study file or command-line flag is invalid."""


class DataError(AblateError):
    """A data set is missing, malformed or cannot be fetched."""


class CheckpointError(AblateError):
    """A checkpoint cannot be read or does not fit the model."""


class TrainingDiverged(AblateError):
    """The loss became NaN or infinite."""


class Pruned(Exception):
    """Raised by an epoch hook to stop a trial early; its run ends KILLED, trial_state PRUNED."""
