"""The :class:`Tracker`: one MLflow run, opened, logged to and closed through ``MlflowClient``.

Every write that creates a run, tags it, ends it or changes its status goes through a
method here; statuses and tag names come from :mod:`ablate.tracking.conventions`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from ablate.tracking import conventions as cv
from ablate.tracking.store import experiment_id, git_commit, quiet_mlflow, resolve_tracking_uri

__all__ = ["Tracker", "context_tags", "system_metrics_monitor", "cwd_git_commit"]


class Tracker:
    """Logs one run. Create with :meth:`start` (new run), :meth:`attach` (resume) or
    :meth:`find` (an existing run, status unchanged).

    Args:
        tracking_uri: any MLflow tracking URI (sqlite:///, file:, http://...).
        run_id: the run this tracker writes to.
        client: an ``MlflowClient`` to share (another run of the same store); made if None.
    """

    def __init__(self, tracking_uri: str | None, run_id: str, client: Any = None):
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(resolve_tracking_uri(tracking_uri))
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = client
        self.run_id = run_id

    experiment_id = staticmethod(experiment_id)

    @classmethod
    def start(
        cls,
        tracking_uri: str | None,
        experiment: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> "Tracker":
        """Create a run (RUNNING) in ``experiment``, tagged with the git commit and source."""
        from mlflow import MlflowClient

        quiet_mlflow()
        uri = resolve_tracking_uri(tracking_uri)
        client = MlflowClient(uri)
        exp_id = experiment_id(client, experiment)
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags = {**context_tags(), **all_tags}  # mlflow.user, mlflow.source.*, user code
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        commit = git_commit()
        if commit:
            all_tags.setdefault("mlflow.source.git.commit", commit)
        all_tags.setdefault("mlflow.source.name", "ablate")
        run = client.create_run(exp_id, tags=all_tags, run_name=run_name)
        return cls(uri, run.info.run_id, client)

    @classmethod
    def attach(cls, tracking_uri: str | None, run_id: str) -> "Tracker":
        """Re-open an existing run (``--resume``): it is marked RUNNING again and the reason
        it stopped goes (a run that then finishes carries no stale failure)."""
        quiet_mlflow()
        tracker = cls(tracking_uri, run_id)
        tracker.client.get_run(run_id)  # raises a clear MLflow error for unknown ids
        tracker.client.update_run(run_id, status=cv.RUNNING)
        tracker.delete_tag(cv.FAILURE_REASON)
        tracker.delete_tag(cv.STOP_REASON)
        return tracker

    @classmethod
    def find(cls, tracking_uri: str | None, run_id: str) -> "Tracker | None":
        """The existing, not deleted run ``run_id``; None when the store does not have it."""
        quiet_mlflow()
        tracker = cls(tracking_uri, run_id)
        try:
            run = tracker.client.get_run(run_id)
        except Exception:
            return None
        return None if run.info.lifecycle_stage == "deleted" else tracker

    def other(self, run_id: str) -> "Tracker":
        """A tracker for another run of the same store (shares the client)."""
        return Tracker(self.tracking_uri, run_id, self.client)

    # -- reading -----------------------------------------------------------------------
    def status(self) -> str:
        """The run's MLflow status: RUNNING, FINISHED, FAILED, KILLED or SCHEDULED."""
        return self.client.get_run(self.run_id).info.status

    def list_artifacts(self, path: str | None = None) -> list[str]:
        """Paths of the run's artifacts directly under ``path`` (relative to the run root)."""
        return [f.path for f in self.client.list_artifacts(self.run_id, path)]

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]

    def download_artifact(self, artifact_path: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        return Path(
            download_artifacts(
                run_id=self.run_id, artifact_path=artifact_path, dst_path=str(dst),
                tracking_uri=self.tracking_uri,
            )
        )

    # -- logging -----------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        # Unset values are left out: a param "None" reads as if None had been chosen.
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit for params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, tags=items)

    def delete_tag(self, key: str) -> None:
        """Remove a tag; no error when the run does not have it."""
        if key in self.client.get_run(self.run_id).data.tags:
            self.client.delete_tag(self.run_id, key)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One batched call per epoch (not one request per metric)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_linked_metrics(self, metrics: list[Any]) -> None:
        """``mlflow.entities.Metric`` objects carrying a logged model and / or a data set
        (MLflow 3 keeps the link on the model's metrics; the run gets each value once)."""
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_inputs(self, datasets: list[Any], models: tuple[str, ...] = ()) -> None:
        """The run's data sets (``mlflow.entities.DatasetInput``): the UI's Datasets column;
        ``models``: ids of logged models the run started from (its lineage, issue #26).

        Workers sharing a store log the same data set at the same moment; MLflow's SQL store
        checks for it and then inserts it, so the slower one hits the unique constraint. Its
        transaction was rolled back whole, and on the retry it finds the other's row.
        """
        from mlflow.entities import LoggedModelInput
        from mlflow.exceptions import MlflowException

        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=datasets,
                                       models=[LoggedModelInput(m) for m in models] or None)
                return
            except MlflowException as err:
                text = str(err)
                if attempt == 2 or not ("UNIQUE" in text or "duplicate key" in text):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_model_output(self, model_id: str, step: int) -> None:
        """Record a logged model as this run's output at ``step`` (the epoch it came from)."""
        from mlflow.entities import LoggedModelOutput

        self.client.log_outputs(self.run_id, [LoggedModelOutput(model_id, step=int(step))])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def attach_files(self, paths: list[str | Path], folder: str) -> None:
        """Copy local files into the run's artifacts under ``folder`` (e.g. ``compare``)."""
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), folder)

    # -- what a study records -----------------------------------------------------------
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

    # -- lifecycle ---------------------------------------------------------------------
    def end(self, status: str = cv.FINISHED, reason: str | None = None) -> None:
        """Close the run: FINISHED, FAILED (with ``failure_reason`` tag) or KILLED."""
        if reason:
            self.set_tags({cv.FAILURE_REASON: reason[: cv.REASON_LIMIT]})
        self.client.set_terminated(self.run_id, status=status)

    def stop(self, reason: str, message: str) -> None:
        """End the run KILLED by a stop signal: ``stop_reason`` (preempted, time_limit, user)."""
        self.set_tags({cv.STOP_REASON: reason})
        self.end(cv.KILLED, message)

    def resume(self) -> None:
        """Mark the run RUNNING again (a resumed study's parent); no-op when it is."""
        if self.status() != cv.RUNNING:
            self.client.update_run(self.run_id, status=cv.RUNNING)

    def continue_trial(self, tags: Mapping[str, Any]) -> None:
        """A retried trial takes this run over: the old failure goes, the new trial's tags come."""
        self.delete_tag(cv.FAILURE_REASON)
        self.delete_tag(cv.STOP_REASON)
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
        self.fail_trial(reason)
        return True

    def supersede(self, reason: str) -> None:
        """Another attempt replaces this trial's run: FAILED, so comparisons skip it."""
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


# -- what MLflow itself records about a run ---------------------------------------------
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cwd_git_commit(cwd: str | Path | None = None) -> tuple[str, bool] | None:
    """(commit, has uncommitted changes) of the git repository around ``cwd``, or None."""
    where = Path(cwd or Path.cwd())
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return commit, bool(status)


def context_tags() -> dict[str, str]:
    """MLflow's run-context tags for this process, and the user's code commit."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: str(v) for k, v in resolve_tags().items() if v is not None}
    user = cwd_git_commit()
    if user is not None:
        tags["user_code.git_commit"] = user[0]
        tags["user_code.git_dirty"] = str(user[1]).lower()
    return tags


def system_metrics_monitor(run_id: str, tracking_uri: str, interval: float = 10.0) -> Any:
    """MLflow's ``SystemMetricsMonitor`` sampling CPU, memory, disk, network (and GPU, with
    ``nvidia-ml-py``: ``pip install 'ablate[gpu]'``) into ``system/*`` metrics of a RUNNING
    run, started; call ``finish()`` to stop it.

    Args:
        interval: seconds between samples (``--system-metrics-interval``; the environment
            variable ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides it).
    """
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # the monitor announces itself at INFO on every start and stop: noise for a CLI
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(
        run_id,
        sampling_interval=interval,
        samples_before_logging=1,
        resume_logging=True,  # a resumed run continues its system/* steps
        tracking_uri=tracking_uri,
    )
    monitor.start()
    return monitor
