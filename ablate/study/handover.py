"""A stopped trial handed over to the next worker, through Optuna's retry machinery.

A study worker stopped by a signal (:mod:`ablate.trial.stopping`: preemption, time limit, Ctrl-C)
ends the trial's MLflow run KILLED with its ``stop_reason`` and tells Optuna FAIL with the
fail kind ``stopped``, which never counts against ``max_retries``. :func:`hand_over` then
re-enqueues the trial with Optuna's ``RetryHeartbeatStaleTrialCallback``, the callback that
also retries a trial whose worker died: the WAITING retry carries the trial's parameters,
grid cell and MLflow run id, and ``failed_trial`` / ``retry_history`` name the trial it
continues (``RetryHeartbeatStaleTrialCallback.retried_trial_number``). The next worker that
claims it, on any machine, resumes that MLflow run from its last checkpoint
(:mod:`ablate.study.worker`), so every epoch is logged once, in one run.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from ablate.study import state as st
from ablate.study.spec import StudyPlan
from ablate.study.state import STOPPED

__all__ = ["STOPPED", "hand_over"]


def hand_over(study: Any, storage: Any, trial_id: int, plan: StudyPlan) -> bool:
    """Re-enqueue the stopped (FAIL) trial ``trial_id`` unless its cell no longer needs it.

    Returns True when a retry was enqueued.
    """
    import optuna
    from optuna.trial import TrialState

    frozen = copy.deepcopy(storage.get_trial(trial_id))
    if frozen.state != TrialState.FAIL:
        return False
    if plan.is_grid:
        cells = st.cell_states(plan, study.get_trials(deepcopy=False))
        cell = cells.get(frozen.user_attrs.get(st.CELL_ATTR))
        if cell is None or cell.done or cell.running or cell.waiting:
            return False
    # The retry is a fresh attempt: it must not inherit this one's fail kind or error.
    frozen.system_attrs.pop(st.FAIL_KIND_ATTR, None)
    frozen.user_attrs.pop(st.ERROR_ATTR, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in Optuna
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
    retry(study, frozen)
    return True
