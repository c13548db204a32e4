"""MLflow adapter: one trial = one MLflow run, written through ``MlflowClient`` only.

This package is the only code that creates, tags, ends or changes the status of an MLflow
run. Runs are opened by :meth:`Tracker.start` / :meth:`Tracker.attach` and a running trial's
run is ended in one place, :func:`owned_run` (used by :func:`ablate.trial.run_trial`). A
study ends a trial's run outside a live trial in exactly three cases, each a
:class:`Tracker` method: :meth:`Tracker.fail_trial` (the trial failed or was stopped while
its run was opening: FAILED, or KILLED for a stop), :meth:`Tracker.supersede` (a retried
trial that cannot resume replaces its old run: FAILED) and :meth:`Tracker.close_orphan`
(a dead worker's run, still RUNNING: FAILED). The parent run is resumed and summarised by
:meth:`Tracker.resume` / :meth:`Tracker.close_study`.

- :mod:`.store`: the tracking URI, experiments, the git commit every run is tagged with.
- :mod:`.conventions`: run statuses and lifecycle tag names (``trial_state``, ...).
- :mod:`.tracker`: :class:`Tracker`, one run's reads, logging and lifecycle.
- :mod:`.owned`: :func:`owned_run`.

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

from ablate.tracking.owned import owned_run
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
    "owned_run",
    "git_commit",
]
