"""MLflow adapter: one trial = one MLflow run, written through ``MlflowClient`` only.

Runs are opened by :meth:`Tracker.start` / :meth:`Tracker.attach` and ended in one place,
:func:`owned_run` (used by :func:`ablate.trial.run_trial`).

The client API (not the fluent ``mlflow.start_run``) keeps no global state, so several
runs (a study's parent and its trials, or trials in worker processes) never step on each
other. Everything the rest of ablate knows about MLflow lives here: the default store, the
metric and tag names (the contract ``ablate compare`` reads), batched logging.

Metric names, all with ``step = epoch``: ``val_*`` and ``alpha`` at 0..E (0 = before
training; ``alpha`` is the value the epoch's validation ran at), ``train_loss`` (the training
*objective*: label-smoothed, MixUp/CutMix targets; not comparable with ``val_loss``),
``train_acc``, ``lr``, ``samples_per_s``, ``epoch_seconds`` at 1..E; at step E ``test_*``
(final weights) with ``test_epoch`` and ``test_alpha``, and ``best_test_*`` (best-validation
checkpoint) with ``best_epoch``, ``best_test_alpha`` and ``best_val_acc``.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_TAGS",
    "resolve_tracking_uri",
    "Tracker",
    "owned_run",
    "git_commit",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The MLflow 3 UI opens an experiment in the view its kind names; ours are model training.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else a SQLite file in the working dir."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit() -> str | None:
    """The commit of the ablate checkout the code runs from, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _quiet_mlflow() -> None:
    # MLflow's alembic migrations and "creating experiment" notices are noise for a CLI.
    import logging

    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tracker:
    """Logs one run. Create with :meth:`start` (new run) or :meth:`attach` (resume).

    Args:
        tracking_uri: any MLflow tracking URI (sqlite:///, file:, http://...).
    """

    def __init__(self, tracking_uri: str | None, run_id: str):
        from mlflow import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(self.tracking_uri)
        self.run_id = run_id

    @staticmethod
    def experiment_id(client: Any, name: str) -> str:
        """Get or create an experiment by name (safe when several processes race)."""
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if "mlflow.experimentKind" not in exp.tags:
                for key, value in EXPERIMENT_TAGS.items():
                    client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        try:
            return client.create_experiment(name, tags=EXPERIMENT_TAGS)
        except Exception:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

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
        from mlflow import MlflowClient

        _quiet_mlflow()
        uri = resolve_tracking_uri(tracking_uri)
        client = MlflowClient(uri)
        exp_id = cls.experiment_id(client, experiment)
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        commit = git_commit()
        if commit:
            all_tags.setdefault("git_commit", commit)
            all_tags.setdefault("mlflow.source.git.commit", commit)
        all_tags.setdefault("mlflow.source.name", "ablate")
        run = client.create_run(exp_id, tags=all_tags, run_name=run_name)
        return cls(uri, run.info.run_id)

    @classmethod
    def attach(cls, tracking_uri: str | None, run_id: str) -> "Tracker":
        """Re-open an existing run (``--resume``): it is marked RUNNING again."""
        _quiet_mlflow()
        tracker = cls(tracking_uri, run_id)
        tracker.client.get_run(run_id)  # raises a clear MLflow error for unknown ids
        tracker.client.update_run(run_id, status="RUNNING")
        return tracker

    # -- logging -----------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, "None" if v is None else str(v)[:6000]) for k, v in params.items()]
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

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def download_artifact(self, artifact_path: str, dst: str | Path) -> Path:
        from mlflow.artifacts import download_artifacts

        return Path(
            download_artifacts(
                run_id=self.run_id, artifact_path=artifact_path, dst_path=str(dst),
                tracking_uri=self.tracking_uri,
            )
        )

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Close the run: FINISHED, FAILED (with ``failure_reason`` tag) or KILLED."""
        if reason:
            self.set_tags({"failure_reason": reason[:5000]})
        self.client.set_terminated(self.run_id, status=status)


@contextmanager
def owned_run(tracker: Tracker, resume_hint: str | None = None) -> Iterator[Tracker]:
    """Own ``tracker``'s run until the block ends, and end it with the status the block earned.

    The one place a trial's MLflow run is ended: FINISHED when the block completes;
    KILLED with ``trial_state=PRUNED`` when it raises :class:`~ablate.exceptions.Pruned`;
    KILLED with a reason on Ctrl-C / SIGTERM; FAILED with the error as ``failure_reason``
    otherwise. The exception always propagates.

    Args:
        tracker: an open run (:meth:`Tracker.start` or :meth:`Tracker.attach`).
        resume_hint: the command that would continue the run, added to an interruption.
    """
    from ablate.exceptions import Pruned

    try:
        yield tracker
    except Pruned:
        tracker.set_tags({"trial_state": "PRUNED"})
        tracker.end("KILLED")
        raise
    except KeyboardInterrupt:
        reason = "interrupted" + (f" (resume with: {resume_hint})" if resume_hint else "")
        tracker.end("KILLED", reason)
        raise
    except BaseException as err:
        tracker.end("FAILED", str(err) if _is_user_facing(err) else f"{type(err).__name__}: {err}")
        raise
    else:
        tracker.end("FINISHED")


def _is_user_facing(err: BaseException) -> bool:
    from ablate.exceptions import AblateError

    return isinstance(err, AblateError)
