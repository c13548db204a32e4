"""Typed errors: anything a user can cause is an AblateError and becomes one clear line."""

from __future__ import annotations

__all__ = ["AblateError", "ConfigError", "DataError", "CheckpointError", "TrainingDiverged",
           "Pruned", "Stopped", "STOP_REASONS", "first_line"]  # fmt: skip

# Why a run was stopped from outside (its MLflow run's ``stop_reason`` tag).
STOP_REASONS = ("preempted", "time_limit", "user")


def first_line(err: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of a library's error (its type name when it says nothing),
    at most ``limit`` characters: how a multi-line error becomes part of one of ours."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = lines[0] if lines else type(err).__name__ if isinstance(err, BaseException) else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


class AblateError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2."""


class ConfigError(AblateError, ValueError):
    """A configuration value, study file or command-line flag is invalid."""


class DataError(AblateError):
    """A data set is missing, malformed or cannot be fetched."""


class CheckpointError(AblateError):
    """A checkpoint cannot be read or does not fit the model."""


class LeaseLost(AblateError):
    """Another process took this run over; this one must not write to it again."""


class ResumableError(AblateError):
    """The machine or a service failed the run (a full disk, a store that stopped
    answering); its last checkpoint is kept, and resuming the run continues it."""


class TrackingUnavailable(ResumableError):
    """The MLflow store does not take writes (server gone, database full): write no more."""


class TrainingDiverged(AblateError):
    """The loss became NaN or infinite."""


class Pruned(Exception):
    """Raised by an epoch hook to stop a trial early; its run ends KILLED, trial_state PRUNED."""


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGINT, a time-limit warning) ended a run between steps.

    A ``KeyboardInterrupt``, so code that cleans up after Ctrl-C cleans up after it too.
    The run ends KILLED with ``stop_reason`` set to :attr:`reason`; a study trial is handed
    over so that the next worker resumes it (:mod:`ablate.trial.stopping`).

    Args:
        reason: one of :data:`STOP_REASONS`.
        signal_name: the signal that asked for the stop, e.g. ``SIGTERM``.
    """

    def __init__(self, reason: str, signal_name: str):
        super().__init__(f"stopped by {signal_name} ({reason})")
        self.reason = reason
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        import signal

        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))
