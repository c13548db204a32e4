"""What every part of a study run shares: its settings, its outcome, two small helpers.

Kept apart so that the parent-run preparation, the workers, the supervisor and the report
import it without importing each other.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from ablate.study.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL

__all__ = [
    "RunSettings", "StudyOutcome", "PARENT_ATTR", "MAX_CELLS", "RUN_FLAGS", "quiet_optuna",
    "one_line",
]  # fmt: skip

# Study user attribute holding the study's MLflow parent run.
PARENT_ATTR = "mlflow_parent_run_id"
MAX_CELLS = 10_000  # a larger grid runs only with --yes (10^6 cells took 65 s only to list)
# Run settings that say where and how a command trains, never what: `ablate study` takes them
# as flags (base overrides), and a resumed study accepts changed ones.
RUN_FLAGS = (
    "device", "data_dir", "download", "checkpoint_dir", "checkpoint_upload_every",
    "keep_checkpoints", "system_metrics", "system_metrics_interval",
)  # fmt: skip


@dataclass(frozen=True)
class RunSettings:
    """How this command runs the study (picklable: it is sent to spawned workers).

    Args:
        storage_url: resolved Optuna storage URL.
        tracking_uri: resolved MLflow tracking URI (the same for every worker).
        invocation: id of this command; ``max_trials`` counts the trials it claimed.
        workers: worker processes on this machine.
        devices: device of each worker, round-robin (worker i trains on
            ``devices[i % len(devices)]``); empty: the study file's ``device``.
        threads: CPU threads per worker (None: leave torch's default).
        max_trials: run at most this many trials in this command (all workers together).
        deadline: ``time.time()`` after which no new trial starts.
        heartbeat_interval / grace_period: seconds; see :mod:`ablate.study.storage`.
        poll_interval: seconds an idle worker waits before looking again.
        wait_for_others: with nothing to claim, wait while other workers' trials run (they
            may die and need a retry); False for a requeued array task, which would only
            hold its allocation: a dead task's trial is retried by its own requeue or a rerun.
    """

    storage_url: str
    tracking_uri: str
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)
    workers: int = 1
    devices: tuple[str, ...] = ()
    threads: int | None = None
    max_trials: int | None = None
    deadline: float | None = None
    heartbeat_interval: int = HEARTBEAT_INTERVAL
    grace_period: int = GRACE_PERIOD
    poll_interval: float = 2.0
    wait_for_others: bool = True


@dataclass
class StudyOutcome:
    """What a ``run_study`` call did and where the study stands."""

    name: str
    storage: str
    tracking_uri: str
    parent_run_id: str
    complete: bool
    trials_run: int
    rows: list[dict[str, Any]]
    table: str
    exhausted: list[str] = field(default_factory=list)  # cells that failed 1 + max_retries times
    errors: list[str] = field(default_factory=list)  # why workers stopped early


def quiet_optuna() -> None:
    import optuna

    from ablate.tracking.store import quiet_mlflow

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_mlflow()  # schema notices are noise next to a progress bar
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def one_line(text: str, limit: int = 1000) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
