"""The :class:`Tracker`: one MLflow run, opened, logged to and closed through ``MlflowClient``.

Every write that creates a run, tags it, ends it or changes its status goes through a
method here; statuses and tag names come from :mod:`ablate.tracking.conventions`.

Faults, the way lease-based systems handle them:

- **a lease** (tag ``ablate.lease``): each process that opens or resumes a run writes a new
  token; :meth:`Tracker.check_lease`, called before each epoch's writes, stops a process
  whose run was taken over (a paused worker whose trial was handed on) before it writes;
- **bounded patience** with a tracking server: MLflow's HTTP retries are capped at about a
  minute (:data:`HTTP_PATIENCE`, unless the environment sets them), and
  :func:`unavailable` tells a store that is gone or full from a bug, so the recorder ends
  with one line and leaves the run resumable;
- **a stop history** (tag ``stops``): every stop, why and after which epoch, and where each
  resume started (:meth:`Tracker.stop`, :meth:`Tracker.resumed`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from ablate.exceptions import AblateError
from ablate.tracking import conventions as cv
from ablate.tracking.store import experiment_id, git_commit, quiet_mlflow, resolve_tracking_uri

__all__ = [
    "Tracker", "context_tags", "system_metrics_monitor", "LeaseLost",
    "ResumableError", "TrackingUnavailable", "unavailable", "LEASE", "STOPS",
]  # fmt: skip

LEASE = "ablate.lease"  # the token of the process that owns the run now
STOPS = "stops"  # JSON list: {"reason", "epoch"} per stop, "resumed" once resumed
# MLflow retries a request 7 times over about 4 minutes by default, and a run makes three
# requests on its way out (metrics, upload, end): 12.5 minutes for a server that never
# returns. 5 retries (waits 0, 4, 8, 16, 32 s) still ride out a server down for 44 s or frozen
# for 60 s, then give up after about a minute.
HTTP_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}  # fmt: skip


class LeaseLost(AblateError):
    """Another process took this run over; this one must not write to it again."""


class ResumableError(AblateError):
    """The machine or a service failed the run (a full disk, a store that stopped
    answering); its last checkpoint is kept, and resuming the run continues it."""


class TrackingUnavailable(ResumableError):
    """The MLflow store does not take writes (server gone, database full): write no more."""


def unavailable(err: BaseException | None) -> str | None:
    """Why the MLflow store cannot be written now (the root cause, one line), or None when
    ``err`` is not a store failure: a lost connection or a timeout of the server, an
    operational error of its database (disk full, locked, unreachable). Our own errors
    (:class:`AblateError`) already say what they mean."""
    import requests
    import sqlalchemy.exc

    failures = (requests.ConnectionError, requests.Timeout, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError)
    chain: list[BaseException] = []
    while err is not None and len(chain) < 20 and not isinstance(err, AblateError):
        chain.append(err)
        err = err.__cause__ if err.__cause__ or err.__suppress_context__ else err.__context__
    if not any(isinstance(e, failures) for e in chain):
        return None
    return " ".join(str(chain[-1]).split())[:200] or type(chain[-1]).__name__


class Tracker:
    """Logs one run. Create with :meth:`start` (new run), :meth:`attach` (resume) or
    :meth:`find` (an existing run, status unchanged).

    Args:
        tracking_uri: any MLflow tracking URI (sqlite:///, file:, http://...).
        run_id: the run this tracker writes to.
        client: an ``MlflowClient`` to share (another run of the same store); made if None.
    """

    def __init__(self, tracking_uri: str | None, run_id: str, client: Any = None):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if self.tracking_uri.startswith(("http://", "https://")):
            for key, value in HTTP_PATIENCE.items():
                os.environ.setdefault(key, value)
        if client is None:
            from mlflow import MlflowClient

            client = MlflowClient(self.tracking_uri)
        self.client = client
        self.run_id = run_id
        self.lease: str | None = None  # set when this process owns the run (start, attach)

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
        """Create a run (RUNNING) in ``experiment``, tagged with the git commit and source;
        this process holds its lease."""
        quiet_mlflow()
        tracker = cls(tracking_uri, "")
        exp_id = experiment_id(tracker.client, experiment)
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags = {**context_tags(), **all_tags}  # mlflow.user, mlflow.source.*, user code
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        commit = git_commit()
        if commit:
            all_tags.setdefault("mlflow.source.git.commit", commit)
        all_tags.setdefault("mlflow.source.name", "ablate")
        tracker.lease = all_tags[LEASE] = uuid.uuid4().hex
        tracker.run_id = tracker.client.create_run(
            exp_id, tags=all_tags, run_name=run_name).info.run_id
        return tracker

    @classmethod
    def attach(cls, tracking_uri: str | None, run_id: str) -> "Tracker":
        """Take an existing run over (``--resume``, a retried trial): a new lease fences off
        any process still writing to it, the run is RUNNING again and the reason it stopped
        goes (a run that then finishes carries no stale failure; ``stops`` keeps it)."""
        quiet_mlflow()
        tracker = cls(tracking_uri, run_id)
        tags = tracker.client.get_run(run_id).data.tags  # a clear MLflow error for unknown ids
        tracker.lease = uuid.uuid4().hex
        tracker.set_tags({LEASE: tracker.lease})
        tracker.client.update_run(run_id, status=cv.RUNNING)
        for key in {cv.FAILURE_REASON, cv.STOP_REASON} & set(tags):
            tracker.client.delete_tag(run_id, key)
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
    def check_lease(self) -> None:
        """Raise :class:`LeaseLost` when another process has taken the run over since this
        one opened it (no-op for a tracker that never held it)."""
        if self.lease is None:
            return
        if self.tags().get(LEASE) != self.lease:
            raise LeaseLost(
                f"run {self.run_id} was taken over by another process while this one was "
                "paused or cut off; this one stops without writing to it again"
            )

    def tags(self) -> dict[str, str]:
        return self.client.get_run(self.run_id).data.tags

    def logged_models(self) -> list[Any]:
        """The run's logged models (``LoggedModel``: model_id, status, tags)."""
        exp = self.client.get_run(self.run_id).info.experiment_id
        return list(self.client.search_logged_models(
            [exp], filter_string=f"source_run_id = '{self.run_id}'"))

    def forget_models(self, models: list[Any]) -> set[str]:
        """Delete ``models`` (what an end cut short left); returns the run's metric names."""
        for model in models:
            self.client.delete_logged_model(model.model_id)
        return set(self.client.get_run(self.run_id).data.metrics)

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

    def stop(self, reason: str, message: str, epoch: int | None = None,
             status: str = cv.KILLED) -> None:
        """End the run (KILLED by a stop signal: ``stop_reason`` preempted, time_limit or
        user) and add the stop, after ``epoch``, to its ``stops`` history."""
        self._stop(reason, epoch, {cv.STOP_REASON: reason} if status == cv.KILLED else {})
        self.end(status, message)

    def resumed(self, epoch: int) -> None:
        """The run continues after ``epoch`` (0: from the start): the last stop gets
        ``resumed``; a stop nobody recorded (SIGKILL, the store gone) is added first."""
        self._stop("unrecorded", epoch, {"resumed_from_epoch": epoch}, resumed=epoch)

    def _stop(self, reason: str, epoch: int | None, tags: Mapping[str, Any],
              resumed: int | None = None) -> None:
        stops = json.loads(self.tags().get(STOPS, "[]"))
        if resumed is None or not stops or "resumed" in stops[-1]:
            stops.append({"reason": reason, "epoch": epoch})
        if resumed is not None:
            stops[-1]["resumed"] = resumed
        self.set_tags({**tags, STOPS: json.dumps(stops[-50:], separators=(",", ":"))})

    def resume(self) -> None:
        """Mark the run RUNNING again (a resumed study's parent); no-op when it is."""
        if self.status() != cv.RUNNING:
            self.client.update_run(self.run_id, status=cv.RUNNING)

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


# -- what MLflow itself records about a run ---------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def context_tags() -> dict[str, str]:
    """MLflow's run-context tags for this process, and the commit of the user's code (the
    git repository around the working directory) with whether it had uncommitted changes."""
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: str(v) for k, v in resolve_tags().items() if v is not None}
    commit = _git("rev-parse", "HEAD")
    if commit:
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        tags.update({"user_code.git_commit": commit, "user_code.git_dirty": str(dirty).lower()})
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
    monitor = SystemMetricsMonitor(  # resume_logging: a resumed run continues its steps
        run_id, sampling_interval=interval, samples_before_logging=1, resume_logging=True,
        tracking_uri=tracking_uri)
    monitor.start()
    return monitor
