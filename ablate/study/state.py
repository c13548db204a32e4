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
  resumes its MLflow run (:mod:`ablate.study.recovery`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from ablate.study.spec import StudyPlan

__all__ = ["CELL_ATTR", "RUN_ATTR", "ERROR_ATTR", "WORKER_ATTR", "INVOCATION_ATTR",
           "FAIL_KIND_ATTR", "STOPPED", "CellState", "cell_states", "counts_as_attempt",
           "was_handed_over", "retried_numbers", "sampled_used", "finished_count", "is_complete",
           "exhausted_cells", "trial_params", "params_text", "trial_label"]  # fmt: skip

CELL_ATTR = "cell"
RUN_ATTR = "mlflow_run_id"
ERROR_ATTR = "error"
WORKER_ATTR = "ablate.worker"
INVOCATION_ATTR = "ablate.invocation"
FAIL_KIND_ATTR = "ablate.fail_kind"
STOPPED = "stopped"  # the fail kind of a trial a stop signal ended and handed over


def _in(trial: "FrozenTrial", *names: str) -> bool:
    return trial.state.name in names


def was_handed_over(trial: "FrozenTrial") -> bool:
    """A trial stopped by a signal whose training a retry continues (same MLflow run)."""
    return trial.system_attrs.get(FAIL_KIND_ATTR) == STOPPED


def counts_as_attempt(trial: "FrozenTrial") -> bool:
    """A failed run of a cell that uses up one of its retries (not a setup error or Ctrl-C)."""
    return _in(trial, "FAIL") and trial.system_attrs.get(FAIL_KIND_ATTR) in (None, "error")


@dataclass
class CellState:
    """Every trial that ran (or waits to run) one grid cell."""

    trials: list["FrozenTrial"] = field(default_factory=list)

    def _with(self, *names: str) -> list["FrozenTrial"]:
        return [t for t in self.trials if _in(t, *names)]

    complete = property(lambda self: self._with("COMPLETE"))
    running = property(lambda self: self._with("RUNNING"))
    waiting = property(lambda self: self._with("WAITING"))

    @property
    def done(self) -> bool:
        """Finished for good: a COMPLETE or PRUNED trial exists."""
        return bool(self._with("COMPLETE", "PRUNED"))

    @property
    def attempts_failed(self) -> int:
        return sum(counts_as_attempt(t) for t in self.trials)

    def exhausted(self, max_retries: int) -> bool:
        """Failed ``1 + max_retries`` times and nothing else pending: given up."""
        pending = self.done or self.running or self.waiting
        return not pending and self.attempts_failed >= 1 + max_retries


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
    return {n for t in trials for n in t.system_attrs.get("retry_history", []) or []}


def sampled_used(trials: list["FrozenTrial"]) -> int:
    """Trials of a sampled study that use up ``n_trials``.

    Everything except interrupted / setup failures and dead trials that were retried (their
    retry is counted instead).
    """
    retried = retried_numbers(trials)
    return sum(not _in(t, "FAIL") or (counts_as_attempt(t) and t.number not in retried)
               for t in trials)  # fmt: skip


def finished_count(plan: "StudyPlan", trials: list["FrozenTrial"]) -> int:
    """Progress: cells done or given up (grid), or trials finished (sampled)."""
    if plan.is_grid:
        states = cell_states(plan, trials).values()
        return sum(s.done or s.exhausted(plan.spec.max_retries) for s in states)
    retried = retried_numbers(trials)
    return sum(_in(t, "COMPLETE", "PRUNED") or (counts_as_attempt(t) and t.number not in retried)
               for t in trials)  # fmt: skip


def is_complete(plan: "StudyPlan", trials: list["FrozenTrial"]) -> bool:
    """Nothing left to run: every cell done or given up / ``n_trials`` used, none running."""
    cells = {c.key for c in plan.cells}
    relevant = [t for t in trials if not plan.is_grid or t.user_attrs.get(CELL_ATTR) in cells]
    if any(_in(t, "RUNNING", "WAITING") for t in relevant):
        return False
    if plan.is_grid:
        states = cell_states(plan, trials).values()
        return all(s.done or s.exhausted(plan.spec.max_retries) for s in states)
    return plan.spec.n_trials is None or sampled_used(trials) >= plan.spec.n_trials


def trial_params(plan: "StudyPlan", trial: "FrozenTrial") -> dict[str, Any]:
    """The trial's parameters: Optuna params, or the fixed cell values if never suggested."""
    return {**(trial.system_attrs.get("fixed_params", {}) or {}), **trial.params}


def params_text(params: dict[str, Any]) -> str:
    """``variant=softmax_v lr=0.001``: parameters for a line of text."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def trial_label(plan: "StudyPlan", trial: "FrozenTrial") -> str:
    """``#3 variant=softmax_v seed=1``: a trial named by its number and cell (or sample)."""
    return f"#{trial.number} {params_text(trial_params(plan, trial))}".strip()
