"""Run statuses and the lifecycle tags ablate writes, named once.

``ablate compare`` and the study read these tags back, so every writer (all in
:mod:`ablate.tracking`) and every reader uses the names below.
"""

from __future__ import annotations

__all__ = [
    "RUNNING",
    "FINISHED",
    "FAILED",
    "KILLED",
    "TRIAL_STATE",
    "FAILURE_REASON",
    "STUDY_STATE",
    "STOP_REASON",
    "REASON_LIMIT",
    "study_state",
]

# MLflow run statuses (``RunStatus`` names).
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"

# Tags. ``trial_state`` mirrors the Optuna trial state (RUNNING, COMPLETE, PRUNED, FAIL)
# of a study trial's run; ``failure_reason`` says why a run ended FAILED or KILLED;
# ``study_state`` is the study parent run's summary (incomplete, complete, ...).
TRIAL_STATE = "trial_state"
FAILURE_REASON = "failure_reason"
STUDY_STATE = "study_state"
# Why a stop signal ended a run KILLED: preempted, time_limit or user (ablate.trial.stopping).
STOP_REASON = "stop_reason"

REASON_LIMIT = 5000  # characters of a failure reason kept in its tag


def study_state(complete: bool, failures: bool) -> str:
    """The parent run's ``study_state`` tag: incomplete, complete or complete_with_failed_cells."""
    if not complete:
        return "incomplete"
    return "complete_with_failed_cells" if failures else "complete"
