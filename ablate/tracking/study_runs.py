"""What a study records on MLflow runs outside a live trial: its parent run's settings and
summary, a trial's objective, and the hand-overs between workers (a trial failed, retried in
the same run, superseded, or left by a dead worker). :class:`~ablate.tracking.Tracker`
inherits these, so a study holds one object per run; each call is one or two tag writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ablate.exceptions import LeaseLost
from ablate.tracking import conventions as cv

if TYPE_CHECKING:
    from ablate.tracking.tracker import Tracker

__all__ = ["StudyRecords"]


class StudyRecords:
    """The study's writes on a :class:`~ablate.tracking.Tracker` (``self`` is one)."""

    def describe_study(self, params: Mapping[str, Any], study_file: str | None) -> None:
        """A study's parent run: its settings as params and the study file as ``study.yaml``."""
        self.log_params(params)
        if study_file:
            self.log_text(study_file, "study.yaml")

    def publish_summary(
        self,
        texts: Mapping[str, str],
        figures: Mapping[str, Any] = {},
        metrics: Mapping[str, float] = {},
    ) -> None:
        """A study's summary on its parent run: text files (``summary.md``, ``trials.csv``),
        figures (name -> matplotlib figure, closed here) and metrics at step 0."""
        import matplotlib.pyplot as plt

        for name, text in texts.items():
            self.log_text(text, name)
        for name, fig in figures.items():
            self.log_figure(fig, name)
            plt.close(fig)
        self.log_metrics(metrics, step=0)

    def record_objective(self, value: float, parent: "Tracker | None", trial_number: int) -> None:
        """A completed study trial's objective value: on its run (step 0) and on the parent's
        history (step = trial number; best effort, the chart only)."""
        self.log_metrics({"objective": value}, step=0)
        if parent is not None:
            try:
                parent.log_metrics({"objective": value}, step=trial_number)
            except Exception:  # noqa: BLE001 - the parent's history chart only
                pass


    def continue_trial(self, tags: Mapping[str, Any]) -> None:
        """A retried trial takes this run over (:meth:`attach`): the new trial's tags come."""
        self.set_tags({**tags, cv.TRIAL_STATE: "RUNNING"})

    def fail_trial(self, reason: str, status: str = cv.FAILED) -> None:
        """End a study trial's run ``status`` with ``trial_state=FAIL`` and the reason."""
        self.set_tags({cv.TRIAL_STATE: "FAIL"})
        self.end(status, reason)

    def close_orphan(self, reason: str) -> bool:
        """Fail the run of a trial whose worker died, if still RUNNING; True when closed.

        A retry copies the dead trial's attributes, so the run may be a predecessor's that
        is already closed: that one is left as it is.
        """
        if self.status() != cv.RUNNING:
            return False
        self._stop("worker lost", None, {cv.TRIAL_STATE: "FAIL"})
        self.end(cv.FAILED, reason)
        return True

    def supersede(self, reason: str) -> None:
        """Another attempt replaces this trial's run: FAILED, so comparisons skip it; not
        when the attempt continues this very run (it holds the lease now)."""
        try:
            self.check_lease()
        except LeaseLost:
            return
        self.fail_trial(reason)

    def set_trial_state(self, state: str) -> None:
        """``trial_state`` tag: the Optuna state the trial ended in (COMPLETE, PRUNED, FAIL)."""
        self.set_tags({cv.TRIAL_STATE: state})

    def close_study(self, complete: bool, failures: bool, trials_running: bool) -> None:
        """Summarise a study's parent run: ``study_state``, and end it unless trials still run.

        FINISHED when every cell (or trial) is done; KILLED when the study stopped before
        the end (limit, timeout, Ctrl-C) and no trial runs: the next command resumes it.
        """
        self.set_tags({cv.STUDY_STATE: cv.study_state(complete, failures)})
        if complete:
            self.end(cv.FINISHED)
        elif not trials_running:
            self.end(cv.KILLED)
