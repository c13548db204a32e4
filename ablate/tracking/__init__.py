"""Everything a trial leaves behind, and the only code that writes to MLflow.

- :mod:`.recorder`: :class:`~.recorder.Recorder`, one trial's records: params, tags,
  metrics, checkpoints and their uploads, data sets, logged models, figures, system
  metrics, the end status; with the checkpoint files (local every epoch, uploaded every K
  epochs) and the figures;
- :mod:`.tracker`: :class:`Tracker`, one MLflow run through ``MlflowClient``: its reads and
  writes, the lease and the stop history, and the run's data sets and logged models
  (``log_datasets``, ``log_trial_models``);
- :mod:`.study_runs`: what a study writes outside a live trial (``fail_trial``,
  ``supersede``, ``close_orphan``, ``describe_study``, ``publish_summary``, ...), methods
  every :class:`Tracker` has;
- :mod:`.models`: logged models read back (``models:/`` URIs, ``--init-from``, ``export``);
- :mod:`.store`, :mod:`.conventions`: the tracking URI and experiments, MLflow's context
  tags and system-metrics monitor; metric, status and tag names (the contract ``ablate
  compare`` and the study read).

The client API (not the fluent ``mlflow.start_run``) keeps no global state, so several runs
(a study's parent and its trials, or trials in worker processes) never step on each other.
"""

from __future__ import annotations

from ablate.tracking.store import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT_TAGS,
    git_commit,
    resolve_tracking_uri,
)
from ablate.tracking.tracker import Tracker

__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_TAGS",
    "resolve_tracking_uri",
    "Tracker",
    "git_commit",
]
