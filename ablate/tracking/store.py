"""Where runs are stored: the tracking URI, experiments, and what every run is tagged with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_TAGS",
    "resolve_tracking_uri",
    "git_commit",
    "experiment_id",
    "quiet_mlflow",
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


def quiet_mlflow() -> None:
    """MLflow's alembic migrations and "creating experiment" notices are noise for a CLI."""
    import logging

    for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
