"""The Optuna side of a trial: sampler, pruner, the parameters a trial gets, what it reports."""

from __future__ import annotations

import math
from typing import Any

from ablate.exceptions import Pruned
from ablate.study.spec import StudyPlan

__all__ = ["make_sampler", "make_pruner", "suggest", "FollowMetric"]


def make_sampler(plan: StudyPlan, worker_index: int = 0) -> Any:
    """TPE / random for search spaces; grid cells are enqueued with fixed parameters."""
    import optuna

    # Different seeds per worker, or parallel workers would propose the same points.
    seed = None if plan.spec.seed is None else plan.spec.seed + worker_index
    if plan.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(plan: StudyPlan) -> Any:
    import optuna

    spec = plan.spec.pruner
    options = spec.model_dump(exclude={"type"}, exclude_none=True)  # unset: Optuna's defaults
    if spec.type == "median":
        return optuna.pruners.MedianPruner(**options)
    if spec.type == "hyperband":
        epochs = plan.base.get("epochs")
        if epochs and "epochs" not in plan.grid and "epochs" not in plan.search_space:
            options.setdefault("max_resource", epochs)  # every trial runs the base's epochs
        return optuna.pruners.HyperbandPruner(**options)
    return optuna.pruners.NopPruner()


class FollowMetric:
    """``on_epoch``: report the study metric to Optuna each epoch and ask the pruner.

    Epoch 0 (before training) is reported, so the curve starts where training starts, but
    it neither counts as the trial's best value nor triggers pruning.
    """

    def __init__(self, trial: Any, plan: StudyPlan):
        self.trial = trial
        self.metric = plan.metric
        self.maximize = plan.direction == "maximize"
        self.mode = plan.spec.objective
        self.values: list[float] = []

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), epoch)
        if epoch == 0:
            return
        self.values.append(float(value))
        if self.trial.should_prune():
            raise Pruned(f"pruned at epoch {epoch} ({self.metric} {value:.4g})")

    def value(self) -> float | None:
        if not self.values:
            return None
        if self.mode == "final":
            return self.values[-1]
        return max(self.values) if self.maximize else min(self.values)


def suggest(trial: Any, plan: StudyPlan) -> dict[str, Any]:
    """The trial's parameters: its grid cell (fixed when enqueued) and sampled values."""
    params: dict[str, Any] = {}
    for key, values in plan.grid.items():
        params[key] = trial.suggest_categorical(key, values)
    for key, spec in plan.search_space.items():
        if spec.type == "categorical":
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.type == "int":
            step = int(spec.step or 1)
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), step=step)
        else:
            log = spec.type == "log_float"
            params[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=log)
    return params
