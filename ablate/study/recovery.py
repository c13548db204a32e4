"""Crash recovery: what happens to a trial whose worker died (SIGKILL, lost machine).

Optuna fails a RUNNING trial whose heartbeat is stale (any machine), and ablate's reaper
fails one whose worker process is gone (this machine, at once). Either way
:class:`DeadTrialHandler` marks the orphaned MLflow run FAILED with the reason and, when the
trial's grid cell (or the search) still needs a run, re-enqueues it through Optuna's retry
callback. The retry carries the dead trial's attributes, including its MLflow run id, so
the worker that claims it resumes that run from its last checkpoint
(:mod:`ablate.study.worker`).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from ablate.study import state as st
from ablate.study.common import one_line
from ablate.study.spec import StudyPlan

__all__ = ["DeadTrialHandler", "close_orphan_run"]


def _retry_callback() -> Any:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in some Optuna versions
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)


class DeadTrialHandler:
    """Called for each trial failed because its worker died (stale heartbeat or gone pid).

    Marks the trial's orphaned MLflow run FAILED, then re-enqueues the trial (Optuna's
    retry callback, which keeps ``retry_history``) when its cell still needs a run.
    """

    def __init__(self, plan: StudyPlan, tracking_uri: str, grace_period: int):
        self.plan = plan
        self.tracking_uri = tracking_uri
        self.grace_period = grace_period
        self._retry = _retry_callback()

    def __call__(self, study: Any, trial: Any, reason: str | None = None) -> None:
        reason = reason or (
            f"no heartbeat for more than {self.grace_period} s (worker killed or machine lost)"
        )
        close_orphan_run(self.tracking_uri, trial, f"trial {trial.number} failed: {reason}")
        if self._should_retry(study, trial):
            self._retry(study, trial)

    def _should_retry(self, study: Any, trial: Any) -> bool:
        max_retries = self.plan.spec.max_retries
        if self.plan.is_grid:
            key = trial.user_attrs.get(st.CELL_ATTR)
            cells = st.cell_states(self.plan, study.get_trials(deepcopy=False))
            cell = cells.get(key)
            if cell is None or cell.done or cell.running or cell.waiting:
                return False
            return cell.attempts_failed < 1 + max_retries
        history = trial.system_attrs.get("retry_history", []) or []
        return len(history) < max_retries


def close_orphan_run(tracking_uri: str, trial: Any, reason: str) -> None:
    """Mark the dead ``trial``'s MLflow run FAILED with ``reason`` (a warning if that fails)."""
    run_id = trial.user_attrs.get(st.RUN_ATTR)
    if not run_id:
        return
    try:
        from ablate.tracking import Tracker

        Tracker(tracking_uri, run_id).close_orphan(reason)
    except Exception as err:  # the study goes on; the run only keeps a wrong status
        print(
            f"ablate study: warning: could not mark MLflow run {run_id} failed: "
            f"{one_line(err, 200)}",
            file=sys.stderr,
        )
