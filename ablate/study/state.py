"""What the storage says about a study: per-cell state, finished counts, completeness.

Pure functions over Optuna ``FrozenTrial`` lists, shared by the workers (which decide what
to run next), the progress bar and the summary. The trial attributes written by ablate:

* user attrs: ``cell`` (grid studies: the cell's parameters as canonical JSON),
  ``mlflow_run_id`` (the trial's MLflow run), ``error`` (why it failed, one line);
* system attrs: ``ablate.worker`` (host, pid and pid start time of the process running it),
  ``ablate.invocation`` (the command that claimed it, for ``--trials``),
  ``ablate.fail_kind`` (``error``: counts towards ``max_retries``; ``setup``,
  ``interrupted`` and ``stopped``: do not). A FAIL trial without a fail kind was failed
  because its worker died (heartbeat stale or process gone) and counts as an attempt. A
  ``stopped`` trial (a stop signal: preemption, time limit, Ctrl-C) was handed over: a retry
  resumes its MLflow run (:mod:`ablate.study.handover`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from ablate.study.spec import StudyPlan

__all__ = [
    "CELL_ATTR",
    "RUN_ATTR",
    "ERROR_ATTR",
    "WORKER_ATTR",
    "INVOCATION_ATTR",
    "FAIL_KIND_ATTR",
    "STOPPED",
    "CellState",
    "cell_states",
    "counts_as_attempt",
    "was_handed_over",
    "retried_numbers",
    "sampled_used",
    "finished_count",
    "is_complete",
    "exhausted_cells",
    "trial_params",
]

CELL_ATTR = "cell"
RUN_ATTR = "mlflow_run_id"
ERROR_ATTR = "error"
WORKER_ATTR = "ablate.worker"
INVOCATION_ATTR = "ablate.invocation"
FAIL_KIND_ATTR = "ablate.fail_kind"
STOPPED = "stopped"  # the fail kind of a trial a stop signal ended and handed over


def _states():
    from optuna.trial import TrialState

    return TrialState


def was_handed_over(trial: "FrozenTrial") -> bool:
    """A trial stopped by a signal whose training a retry continues (same MLflow run)."""
    return trial.system_attrs.get(FAIL_KIND_ATTR) == STOPPED


def counts_as_attempt(trial: "FrozenTrial") -> bool:
    """A failed run of a cell that uses up one of its retries (not a setup error or Ctrl-C)."""
    TrialState = _states()
    return trial.state == TrialState.FAIL and trial.system_attrs.get(FAIL_KIND_ATTR) in (
        None,
        "error",
    )


@dataclass
class CellState:
    """Every trial that ran (or waits to run) one grid cell."""

    trials: list["FrozenTrial"] = field(default_factory=list)

    def _with(self, *names: str) -> list["FrozenTrial"]:
        TrialState = _states()
        wanted = {TrialState[n] for n in names}
        return [t for t in self.trials if t.state in wanted]

    @property
    def complete(self) -> list["FrozenTrial"]:
        return self._with("COMPLETE")

    @property
    def pruned(self) -> list["FrozenTrial"]:
        return self._with("PRUNED")

    @property
    def done(self) -> bool:
        """Finished for good: a COMPLETE or PRUNED trial exists."""
        return bool(self._with("COMPLETE", "PRUNED"))

    @property
    def running(self) -> list["FrozenTrial"]:
        return self._with("RUNNING")

    @property
    def waiting(self) -> list["FrozenTrial"]:
        return self._with("WAITING")

    @property
    def failed(self) -> list["FrozenTrial"]:
        return self._with("FAIL")

    @property
    def attempts_failed(self) -> int:
        return sum(counts_as_attempt(t) for t in self.trials)

    def exhausted(self, max_retries: int) -> bool:
        """Failed ``1 + max_retries`` times and nothing else pending: given up."""
        return (
            not self.done
            and not self.running
            and not self.waiting
            and self.attempts_failed >= 1 + max_retries
        )


def cell_states(plan: "StudyPlan", trials: Iterable["FrozenTrial"]) -> dict[str, CellState]:
    """Cell key -> its trials, for every cell of the plan (cells edited out are ignored)."""
    states = {cell.key: CellState() for cell in plan.cells}
    for trial in trials:
        key = trial.user_attrs.get(CELL_ATTR)
        if key in states:
            states[key].trials.append(trial)
    return states


def exhausted_cells(plan: "StudyPlan", trials: Iterable["FrozenTrial"]) -> list[str]:
    return [k for k, s in cell_states(plan, trials).items() if s.exhausted(plan.spec.max_retries)]


def retried_numbers(trials: Iterable["FrozenTrial"]) -> set[int]:
    """Numbers of trials that a later trial retries (Optuna's ``retry_history``)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []) or [])
    return out


def sampled_used(trials: list["FrozenTrial"]) -> int:
    """Trials of a sampled study that use up ``n_trials``.

    Everything except interrupted / setup failures and dead trials that were retried (their
    retry is counted instead).
    """
    TrialState = _states()
    retried = retried_numbers(trials)
    used = 0
    for t in trials:
        if t.state == TrialState.FAIL:
            if not counts_as_attempt(t) or t.number in retried:
                continue
        used += 1
    return used


def finished_count(plan: "StudyPlan", trials: list["FrozenTrial"]) -> int:
    """Progress: cells done or given up (grid), or trials finished (sampled)."""
    TrialState = _states()
    if plan.is_grid:
        return sum(
            1
            for s in cell_states(plan, trials).values()
            if s.done or s.exhausted(plan.spec.max_retries)
        )
    retried = retried_numbers(trials)
    return sum(
        1
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (counts_as_attempt(t) and t.number not in retried)
    )


def is_complete(plan: "StudyPlan", trials: list["FrozenTrial"]) -> bool:
    """Nothing left to run: every cell done or given up / ``n_trials`` used, none running."""
    TrialState = _states()
    if any(
        t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials if _relevant(plan, t)
    ):
        return False
    if plan.is_grid:
        return all(
            s.done or s.exhausted(plan.spec.max_retries)
            for s in cell_states(plan, trials).values()
        )
    n_trials = plan.spec.n_trials
    return n_trials is None or sampled_used(trials) >= n_trials


def _relevant(plan: "StudyPlan", trial: "FrozenTrial") -> bool:
    if not plan.is_grid:
        return True
    return trial.user_attrs.get(CELL_ATTR) in {c.key for c in plan.cells}


def trial_params(plan: "StudyPlan", trial: "FrozenTrial") -> dict[str, Any]:
    """The trial's parameters: Optuna params, or the fixed cell values if never suggested."""
    params = dict(trial.system_attrs.get("fixed_params", {}) or {})
    params.update(trial.params)
    return params
