"""Recovery: a trial whose worker died (SIGKILL, lost machine) or was stopped (a signal).

Optuna fails a RUNNING trial whose heartbeat is stale (any machine), and ablate's reaper
fails one whose worker process is gone (this machine, at once). Either way
:class:`DeadTrialHandler` marks the orphaned MLflow run FAILED with the reason and, when the
trial's grid cell (or the search) still needs a run, re-enqueues it through Optuna's
``RetryHeartbeatStaleTrialCallback``.

A worker stopped by a signal (:mod:`ablate.trial.stopping`: preemption, time limit, Ctrl-C)
ends the run KILLED with its ``stop_reason`` and tells Optuna FAIL with the fail kind
``stopped``, which never counts against ``max_retries``; :func:`hand_over` re-enqueues it
the same way. Either retry carries the trial's parameters, grid cell and MLflow run id
(``failed_trial`` / ``retry_history`` name the trial it continues), so the worker that
claims it, on any machine, resumes that run from its last checkpoint (from epoch 0 when it
had none; :mod:`ablate.study.worker`) and every epoch is logged once, in one run.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Any

from ablate.study import state as st
from ablate.study.common import one_line
from ablate.study.spec import StudyPlan

__all__ = ["DeadTrialHandler", "close_orphan_run", "hand_over"]


def _retry(study: Any, trial: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in some Optuna versions
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def _cell_needs_a_run(plan: StudyPlan, study: Any, trial: Any) -> st.CellState | None:
    """The trial's cell, unless it is done or another trial of it runs or waits."""
    cell = st.cell_states(plan, study.get_trials(deepcopy=False)).get(
        trial.user_attrs.get(st.CELL_ATTR)
    )
    return None if cell is None or cell.done or cell.running or cell.waiting else cell


class DeadTrialHandler:
    """Called for each trial failed because its worker died (stale heartbeat or gone pid).

    Marks the trial's orphaned MLflow run FAILED, then re-enqueues the trial (Optuna's
    retry callback, which keeps ``retry_history``) when its cell still needs a run.
    """

    def __init__(self, plan: StudyPlan, tracking_uri: str, grace_period: int):
        self.plan = plan
        self.tracking_uri = tracking_uri
        self.grace_period = grace_period

    def __call__(self, study: Any, trial: Any, reason: str | None = None) -> None:
        reason = reason or (
            f"no heartbeat for more than {self.grace_period} s (worker killed or machine lost)"
        )
        close_orphan_run(self.tracking_uri, trial, f"trial {trial.number} failed: {reason}")
        if self._should_retry(study, trial):
            _retry(study, trial)

    def _should_retry(self, study: Any, trial: Any) -> bool:
        max_retries = self.plan.spec.max_retries
        if self.plan.is_grid:
            cell = _cell_needs_a_run(self.plan, study, trial)
            return cell is not None and cell.attempts_failed < 1 + max_retries
        return len(trial.system_attrs.get("retry_history", []) or []) < max_retries


def hand_over(study: Any, storage: Any, trial_id: int, plan: StudyPlan) -> bool:
    """Re-enqueue the stopped (FAIL) trial ``trial_id`` unless its cell no longer needs it.

    Returns True when a retry was enqueued.
    """
    from optuna.trial import TrialState

    frozen = copy.deepcopy(storage.get_trial(trial_id))
    if frozen.state != TrialState.FAIL:
        return False
    if plan.is_grid and _cell_needs_a_run(plan, study, frozen) is None:
        return False
    # The retry is a fresh attempt: it must not inherit this one's fail kind or error.
    frozen.system_attrs.pop(st.FAIL_KIND_ATTR, None)
    frozen.user_attrs.pop(st.ERROR_ATTR, None)
    _retry(study, frozen)
    return True


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
