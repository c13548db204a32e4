"""Creating (or re-opening) a study and its MLflow parent run, once, under the study lock."""

from __future__ import annotations

from typing import Any

from ablate.exceptions import AblateError, ConfigError
from ablate.study.common import PARENT_ATTR, RUN_FLAGS, RunSettings, quiet_optuna
from ablate.study.spec import StudyPlan
from ablate.study.storage import StudyLock, display_url, open_storage

__all__ = ["prepare_study"]

# Base keys that may differ between commands and machines without changing results.
_RUN_LOCAL_KEYS = frozenset({*RUN_FLAGS, "quiet", "tracking_uri"})


def prepare_study(plan: StudyPlan, settings: RunSettings) -> str:
    """Create or load the study and its MLflow parent run; returns the parent run id.

    Runs under the study lock, so concurrent commands (other machines, or a second command
    on this one) create the study, its tables and its parent run exactly once. Both stores
    are checked first: an unusable one is one line, and nothing is created in the other.
    """
    import optuna

    from ablate.tracking.store import check_store

    quiet_optuna()
    lock = StudyLock(settings.storage_url, plan.name)
    try:
        with lock:  # a server storage that cannot be reached fails here, at once
            check_store(settings.tracking_uri)
            storage = open_storage(settings.storage_url)
            study = optuna.create_study(study_name=plan.name, storage=storage,
                                        direction=plan.direction, load_if_exists=True)
            if study.metric_names is None:  # optuna-dashboard shows the metric, not "Objective"
                study.set_metric_names([plan.metric])
            # what a study was created with stays: a change would mix incomparable trials
            fixed = {"direction": study.direction.name.lower(), **study.user_attrs}
            wanted = {"direction": plan.direction, "metric": plan.metric,
                      "objective": plan.spec.objective}
            for key, value in wanted.items():
                if key not in fixed:
                    study.set_user_attr(key, value)
                elif fixed[key] != value:
                    raise ConfigError(f"{plan.path}: {key}: study {plan.name!r} in "
                                      f"{display_url(settings.storage_url)} was created with "
                                      f"{key} {fixed[key]!r}; use a new study name to change it")
            _check_base_unchanged(study, plan, settings)
            parent = _ensure_parent_run(study, plan, settings)
    finally:
        lock.close()
    return parent


def _check_base_unchanged(study: Any, plan: StudyPlan, settings: RunSettings) -> None:
    """A resumed study must train what it trained before, or its cells would mix configs."""
    base = {k: v for k, v in plan.base.items() if k not in _RUN_LOCAL_KEYS}
    stored = study.user_attrs.get("base")
    if stored is None:
        study.set_user_attr("base", base)
        return
    changed = sorted(k for k in set(stored) | set(base) if stored.get(k) != base.get(k))
    if changed:
        diffs = ", ".join(f"{k} {stored.get(k)!r} -> {base.get(k)!r}" for k in changed)
        raise ConfigError(f"{plan.path}: base: study {plan.name!r} in "
                          f"{display_url(settings.storage_url)} was run with other values "
                          f"({diffs}); finished cells would not be rerun, so use a new study name")


def _ensure_parent_run(study: Any, plan: StudyPlan, settings: RunSettings) -> str:
    from ablate.tracking import Tracker

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        parent = Tracker.find(settings.tracking_uri, run_id)
        if parent is None:
            where = study.user_attrs.get("mlflow_tracking_uri", "another tracking store")
            raise AblateError(f"study {plan.name!r} logs to MLflow parent run {run_id}, which "
                              f"{settings.tracking_uri} does not have (the study was started with "
                              f"--tracking-uri {where}); use that --tracking-uri, or a new study "
                              "name")  # fmt: skip
        parent.resume()
        return run_id
    tags = {
        "study": plan.name, "role": "study", "optuna.study_name": plan.name,
        "optuna.storage": display_url(settings.storage_url), "optuna.sampler": plan.sampler,
        "optuna.pruner": plan.spec.pruner.type, "optuna.metric": plan.metric,
        "optuna.direction": plan.direction,
    }  # fmt: skip
    if plan.spec.description:
        tags["mlflow.note.content"] = plan.spec.description
    tracker = Tracker.start(settings.tracking_uri, plan.experiment, run_name=plan.name, tags=tags)
    study.set_user_attr(PARENT_ATTR, tracker.run_id)
    study.set_user_attr("mlflow_tracking_uri", settings.tracking_uri)
    study.set_user_attr("mlflow_experiment", plan.experiment)
    params = {
        "study_file": plan.path, "sampler": plan.sampler, "pruner": plan.spec.pruner.type,
        "metric": plan.metric, "direction": plan.direction, "objective": plan.spec.objective,
        "total_trials": plan.total_trials, "max_retries": plan.spec.max_retries,
        **{f"grid.{k}": ", ".join(map(str, v)) for k, v in plan.grid.items()},
        **{f"search_space.{k}": p.describe() for k, p in plan.search_space.items()},
        **{f"base.{k}": v for k, v in plan.base.items()},
        **{  # the command line's edits of the study file (the effective file is study.yaml)
            "override." + o.partition("=")[0].lstrip("+~"): o.partition("=")[2] or "(removed)"
            for o in plan.overrides
        },
    }  # fmt: skip
    tracker.describe_study(params, plan.text)
    return tracker.run_id

