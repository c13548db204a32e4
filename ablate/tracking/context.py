"""What MLflow itself records about a run: context tags and system metrics.

- :func:`context_tags`: MLflow's own run-context tags (``mlflow.user``,
  ``mlflow.source.type`` / ``name`` / ``git.commit``, resolved by
  ``mlflow.tracking.context.registry.resolve_tags``) plus the commit of the user's code
  (``user_code.git_commit`` and ``user_code.git_dirty``) when the working directory is a git
  repository.
- :func:`system_metrics`: MLflow's ``SystemMetricsMonitor`` for one run, as a context
  manager (``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``,
  GPU metrics with ``nvidia-ml-py`` installed: ``pip install 'ablate[gpu]'``).

Imports nothing from ablate, so :mod:`ablate.tracking` can use it.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["context_tags", "system_metrics", "cwd_git_commit"]


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


@contextmanager
def system_metrics(
    run_id: str, tracking_uri: str, *, enabled: bool = True, interval: float = 10.0
) -> Iterator[None]:
    """Sample CPU, memory, disk, network (and GPU) use into ``system/*`` metrics of a run.

    Args:
        run_id / tracking_uri: the run (it must be RUNNING; the monitor stops by itself
            when the run ends).
        enabled: False = do nothing (``--no-system-metrics``).
        interval: seconds between samples (``--system-metrics-interval``; the environment
            variable ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides it).
    """
    if not enabled:
        yield
        return
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
    try:
        yield
    finally:
        monitor.finish()
