"""Where runs are stored: the tracking URI, experiments, what every run is tagged with, and
where the MLflow UI shows a run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_TAGS",
    "resolve_tracking_uri",
    "with_installed_driver",
    "display_url",
    "check_store",
    "WORKFLOW_QUERY",
    "experiment_url",
    "run_url",
    "is_server",
    "url_of_run",
    "study_charts_url",
    "git_commit",
    "experiment_id",
    "quiet_mlflow",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# The MLflow 3 UI opens an experiment in the view its kind names; ours are model training.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else a SQLite file in the working dir.

    A database URI gets the driver that is installed (:func:`with_installed_driver`).
    """
    return with_installed_driver(
        uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    )


def with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2; use psycopg2 when only it is here.

    ``ablate[postgres]`` installs psycopg2, so the URL a user copies from the README works for
    the Optuna storage and the MLflow store alike. Likewise ``mysql://`` (mysqlclient) falls
    back to PyMySQL. An explicit ``+driver`` is kept.
    """
    import importlib.util

    head, sep, rest = url.partition("://")
    drivers = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}
    default, fallback = drivers.get(head, (None, None))
    if not sep or default is None or importlib.util.find_spec(default) is not None:
        return url
    return f"{head}+{fallback}://{rest}" if importlib.util.find_spec(fallback) else url


def display_url(url: str) -> str:
    """The URL without its password, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def check_store(uri: str) -> None:
    """Fail in one line when the MLflow store cannot be used (no database driver, not
    reachable), before anything is created elsewhere (a study's Optuna storage)."""
    from mlflow import MlflowClient

    from ablate.exceptions import AblateError

    quiet_mlflow()
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = (lines[0] if lines else type(err).__name__)[:300]
        hint = "; install the database driver (pip install 'ablate[postgres]')" * (
            "No module named" in first
        )
        raise AblateError(f"MLflow tracking store {display_url(uri)}: {first}{hint}") from None


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


def quiet_mlflow() -> None:
    """MLflow's alembic migrations and "creating experiment" notices are noise for a CLI, and
    its SQL store logs every failed statement with all its parameters (904 lines when the
    disk is full) before raising the error ablate reports in one line."""
    import logging

    for name in ("alembic", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


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


# -- where the MLflow UI shows a run ----------------------------------------------------------
# MLflow 3's UI opens experiments in its GenAI view (traces, judges, prompts) unless the URL
# asks for the model-training view with this query (the parameter its router reads).
WORKFLOW_QUERY = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_QUERY}"


def study_charts_url(base: str, experiment_id: str, study: str) -> str:
    """A study's trial runs side by side in the chart view. The UI folds child runs under
    their parent (the study run, which has no curves) unless the runs are filtered and
    sorted by something other than their start time, so the URL does both."""
    from urllib.parse import quote

    query = {
        "searchFilter": f"tags.study = '{study}' and tags.role = 'trial'",
        "orderByKey": "tags.`mlflow.runName`",
        "orderByAsc": "true",
        "compareRunsMode": "CHART",
    }
    args = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return f"{experiment_url(base, experiment_id)}&{args}"


def is_server(tracking_uri: str) -> bool:
    """An MLflow tracking server: it serves its own UI at the same address."""
    return tracking_uri.startswith(("http://", "https://"))


def url_of_run(tracking_uri: str | None, run_id: str, *, study: str | None = None) -> str:
    """``run_url`` for a run id of ``tracking_uri`` (what `ablate run` / `ablate study` print),
    or with ``study`` its trials' :func:`study_charts_url`: on the tracking server itself,
    else on the UI ``ablate ui`` starts (127.0.0.1:5000)."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    run = MlflowClient(uri).get_run(run_id)
    base = uri if is_server(uri) else "http://127.0.0.1:5000"
    if study is not None:
        return study_charts_url(base, run.info.experiment_id, study)
    return run_url(base, run.info.experiment_id, run_id)


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
