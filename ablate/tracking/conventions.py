"""The names a run's records use: metrics, run statuses and lifecycle tags, named once.

``ablate compare`` and the study read these back, so every writer (all in
:mod:`ablate.tracking`) and every reader uses the names below.

Metrics. Per-epoch curves (step = epoch) are named ``<quantity>/<split>``: MLflow's run page
groups metrics into sections by the part before the first ``/`` and sorts those sections
ahead of un-prefixed metrics, so the learning curves open the page (``acc``: train and val
side by side) and the end-of-run scalars (``test_*``, ``best_*``, one point each) follow in
the last section instead of crowding them.
"""

from __future__ import annotations

__all__ = [
    "RUNNING",
    "FINISHED",
    "FAILED",
    "KILLED",
    "TRIAL_STATE",
    "FAILURE_REASON",
    "STUDY_STATE",
    "STOP_REASON",
    "REASON_LIMIT",
    "study_state",
    "curve",
    "VAL_ACC",
    "VAL_LOSS",
    "TRAIN_ACC",
    "TRAIN_LOSS",
    "ALPHA",
    "LR",
    "SAMPLES_PER_S",
    "EPOCH_SECONDS",
    "TRAIN_OBJECTIVE_LABEL",
    "LAST",
    "BEST",
    "PREVIOUS",
    "ARTIFACT_DIR",
]


def curve(quantity: str, split: str) -> str:
    """A per-epoch curve's metric name: ``curve("acc", "val") == "acc/val"``."""
    return f"{quantity}/{split}"


# Per-epoch curves. Validation (steps 0..E; 0 = before training) has acc, loss, precision,
# recall and f1 (macro, scikit-learn), e.g. ``f1/val``; training (steps 1..E) has acc and loss.
VAL_ACC = curve("acc", "val")
VAL_LOSS = curve("loss", "val")
TRAIN_ACC = curve("acc", "train")  # on the augmented (MixUp / CutMix) training batches
TRAIN_LOSS = curve("loss", "train")  # the training objective, not comparable with VAL_LOSS
ALPHA = "alpha/value"  # the alpha each epoch was validated at (a fixed or scheduled alpha)
# a learned alpha: alpha/layer{i} or alpha/layer{i}/head{j} (ablate.models.learned_alpha)
LR = "optim/lr"  # the peak group's learning rate at the end of the epoch
SAMPLES_PER_S = "speed/samples_per_s"
EPOCH_SECONDS = "speed/epoch_seconds"
# End of run, at step E, un-prefixed: test_<q> of the final weights with test_epoch and
# test_alpha; best_test_<q> of the best-validation checkpoint with best_epoch,
# best_test_alpha and best_val_acc.

TRAIN_OBJECTIVE_LABEL = "train objective (smoothed / mixed)"

# Checkpoint files in <checkpoint_dir>/<run_id>/ and in the run's artifacts.
LAST = "last.pt"  # resumable state of the newest finished epoch
BEST = "best.pt"  # weights of the best-validation epoch
PREVIOUS = "last.prev.pt"  # the last.pt before the newest one (fallback when that is cut short)
ARTIFACT_DIR = "checkpoints"  # MLflow artifact folder holding the files above


# MLflow run statuses (``RunStatus`` names).
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"

# Tags. ``trial_state`` mirrors the Optuna trial state (RUNNING, COMPLETE, PRUNED, FAIL)
# of a study trial's run; ``failure_reason`` says why a run ended FAILED or KILLED;
# ``study_state`` is the study parent run's summary (incomplete, complete, ...).
TRIAL_STATE = "trial_state"
FAILURE_REASON = "failure_reason"
STUDY_STATE = "study_state"
# Why a stop signal ended a run KILLED: preempted, time_limit or user (ablate.trial.stopping).
STOP_REASON = "stop_reason"

REASON_LIMIT = 5000  # characters of a failure reason kept in its tag


def study_state(complete: bool, failures: bool) -> str:
    """The parent run's ``study_state`` tag: incomplete, complete or complete_with_failed_cells."""
    if not complete:
        return "incomplete"
    return "complete_with_failed_cells" if failures else "complete"
