"""Running a study: workers claim trials under the study lock, train them, tell Optuna.

Data flow per worker (one process; ``--workers N`` starts N of them, other machines run
the same command against the same server storage)::

    loop:  with StudyLock:  reap dead trials -> choose a cell / new trial -> claim it
           heartbeat thread + MLflow child run (Tracker.start, nested under the parent)
           train(cfg, tracker=..., on_epoch=report + should_prune) -> tell(value | PRUNED | FAIL)

Why not ``study.optimize`` with ``GridSampler``: with several workers (and failed
trials) those can run a grid cell twice or skip it. Here every grid cell is a WAITING trial
created only under the study lock, and only when the cell has no COMPLETE, PRUNED,
RUNNING or WAITING trial, so each cell finishes exactly once. A trial whose worker died
(SIGKILL, lost machine) is failed, by pid on this machine at the next look or by its stale
heartbeat anywhere, its orphaned MLflow run is marked FAILED and its cell runs again, up to
``max_retries`` times.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from ablate.exceptions import AblateError, ConfigError, TrainingDiverged
from ablate.study import state as st
from ablate.study.spec import StudyPlan
from ablate.study.storage import (
    GRACE_PERIOD,
    HEARTBEAT_INTERVAL,
    Heartbeat,
    StudyLock,
    display_url,
    is_dead,
    open_storage,
    process_identity,
    resolve_storage_url,
)

__all__ = [
    "RunSettings",
    "StudyOutcome",
    "DeadTrialHandler",
    "run_study",
    "run_worker",
    "prepare_study",
    "make_sampler",
    "make_pruner",
    "suggest",
]

PARENT_ATTR = "mlflow_parent_run_id"
# Study user attributes that must not change between commands joining the same study.
_FIXED_STUDY_ATTRS = ("metric", "objective")
# Base keys that may differ between commands and machines without changing results.
_RUN_LOCAL_KEYS = frozenset(
    {"device", "quiet", "data_dir", "download", "checkpoint_dir", "tracking_uri"}
)


@dataclass(frozen=True)
class RunSettings:
    """How this command runs the study (picklable: it is sent to spawned workers).

    Args:
        storage_url: resolved Optuna storage URL.
        tracking_uri: resolved MLflow tracking URI (the same for every worker).
        invocation: id of this command; ``max_trials`` counts the trials it claimed.
        workers: worker processes on this machine.
        max_trials: run at most this many trials in this command (all workers together).
        deadline: ``time.time()`` after which no new trial starts.
        heartbeat_interval / grace_period: seconds; see :mod:`ablate.study.storage`.
        poll_interval: seconds an idle worker waits before looking again.
    """

    storage_url: str
    tracking_uri: str
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)
    workers: int = 1
    max_trials: int | None = None
    deadline: float | None = None
    heartbeat_interval: int = HEARTBEAT_INTERVAL
    grace_period: int = GRACE_PERIOD
    poll_interval: float = 2.0


@dataclass
class StudyOutcome:
    """What a ``run_study`` call did and where the study stands."""

    name: str
    storage: str
    tracking_uri: str
    parent_run_id: str
    complete: bool
    trials_run: int
    rows: list[dict[str, Any]]
    table: str
    exhausted: list[str] = field(default_factory=list)  # cells that failed 1 + max_retries times
    errors: list[str] = field(default_factory=list)  # why workers stopped early


# -- Optuna objects -------------------------------------------------------------------------
def _quiet_optuna() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # MLflow's and alembic's schema notices are noise next to a progress bar.
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
    if spec.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=5 if spec.n_startup_trials is None else spec.n_startup_trials,
            n_warmup_steps=spec.n_warmup_steps or 0,
            interval_steps=spec.interval_steps or 1,
        )
    if spec.type == "hyperband":
        epochs = plan.base.get("epochs")
        varies = "epochs" in plan.grid or "epochs" in plan.search_space
        max_resource: Any = spec.max_resource or ("auto" if varies or epochs is None else epochs)
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource or 1,
            max_resource=max_resource,
            reduction_factor=spec.reduction_factor or 3,
        )
    return optuna.pruners.NopPruner()


def _retry_callback() -> Any:
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if cls is None:  # Optuna < 4.9
        cls = optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(max_retry=None)


def _one_line(text: str, limit: int = 1000) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class DeadTrialHandler:
    """Called for each trial failed because its worker died (stale heartbeat or gone pid).

    Marks the trial's orphaned MLflow run FAILED, then re-enqueues the trial (Optuna's
    retry callback, which keeps ``retry_history``) when its cell still needs a run.
    """

    def __init__(self, plan: StudyPlan, tracking_uri: str, grace_period: int):
        self.plan = plan
        self.tracking_uri = tracking_uri
        self.grace_period = grace_period
        self._retry = _retry_callback()

    def __call__(self, study: Any, trial: Any, reason: str | None = None) -> None:
        reason = reason or (
            f"no heartbeat for more than {self.grace_period} s (worker killed or machine lost)"
        )
        _close_orphan_run(self.tracking_uri, trial, f"trial {trial.number} failed: {reason}")
        if self._should_retry(study, trial):
            self._retry(study, trial)

    def _should_retry(self, study: Any, trial: Any) -> bool:
        max_retries = self.plan.spec.max_retries
        if self.plan.is_grid:
            key = trial.user_attrs.get(st.CELL_ATTR)
            cells = st.cell_states(self.plan, study.get_trials(deepcopy=False))
            cell = cells.get(key)
            if cell is None or cell.done or cell.running or cell.waiting:
                return False
            return cell.attempts_failed < 1 + max_retries
        history = trial.system_attrs.get("retry_history", []) or []
        return len(history) < max_retries


def _close_orphan_run(tracking_uri: str, trial: Any, reason: str) -> None:
    run_id = trial.user_attrs.get(st.RUN_ATTR)
    if not run_id:
        return
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        if client.get_run(run_id).info.status != "RUNNING":
            return  # a predecessor's run (attributes are copied to retries), already closed
        client.set_tag(run_id, "failure_reason", reason[:5000])
        client.set_tag(run_id, "trial_state", "FAIL")
        client.set_terminated(run_id, status="FAILED")
    except Exception as err:  # the study goes on; the run only keeps a wrong status
        print(
            f"ablate study: warning: could not mark MLflow run {run_id} failed: "
            f"{_one_line(err, 200)}",
            file=sys.stderr,
        )


# -- preparing the study (main process, under the lock) ----------------------------------------
def prepare_study(plan: StudyPlan, settings: RunSettings) -> str:
    """Create or load the study and its MLflow parent run; returns the parent run id.

    Runs under the study lock, so concurrent commands (other machines, or a second command
    on this one) create the study, its tables and its parent run exactly once.
    """
    import optuna

    _quiet_optuna()
    lock = StudyLock(settings.storage_url, plan.name)
    try:
        with lock:
            storage = open_storage(settings.storage_url)
            study = optuna.create_study(
                study_name=plan.name,
                storage=storage,
                direction=plan.direction,
                load_if_exists=True,
            )
            if study.direction.name.lower() != plan.direction:
                raise ConfigError(
                    f"{plan.path}: direction: study {plan.name!r} in "
                    f"{display_url(settings.storage_url)} was created to "
                    f"{study.direction.name.lower()}; use a new study name to change it"
                )
            attrs = study.user_attrs
            wanted = {"metric": plan.metric, "objective": plan.spec.objective}
            for key in _FIXED_STUDY_ATTRS:
                if key in attrs and attrs[key] != wanted[key]:
                    raise ConfigError(
                        f"{plan.path}: {key}: study {plan.name!r} in "
                        f"{display_url(settings.storage_url)} "
                        f"was created with {key} {attrs[key]!r}; use a new study name to change it"
                    )
            for key, value in wanted.items():
                if key not in attrs:
                    study.set_user_attr(key, value)
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
        raise ConfigError(
            f"{plan.path}: base: study {plan.name!r} in {display_url(settings.storage_url)} was "
            f"run with other values ({diffs}); finished cells would not be rerun, so use a new "
            "study name"
        )


def _ensure_parent_run(study: Any, plan: StudyPlan, settings: RunSettings) -> str:
    from mlflow import MlflowClient

    from ablate.tracking import Tracker

    client = MlflowClient(settings.tracking_uri)
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            run = client.get_run(run_id)
        except Exception:
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            where = study.user_attrs.get("mlflow_tracking_uri", "another tracking store")
            raise AblateError(
                f"study {plan.name!r} logs to MLflow parent run {run_id}, which "
                f"{settings.tracking_uri} "
                f"does not have (the study was started with --tracking-uri {where}); use that "
                "--tracking-uri, or a new study name"
            )
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")  # resumed
        return run_id
    tags = {
        "study": plan.name,
        "role": "study",
        "optuna.study_name": plan.name,
        "optuna.storage": display_url(settings.storage_url),
        "optuna.sampler": plan.sampler,
        "optuna.pruner": plan.spec.pruner.type,
        "optuna.metric": plan.metric,
        "optuna.direction": plan.direction,
    }
    if plan.spec.description:
        tags["mlflow.note.content"] = plan.spec.description
    tracker = Tracker.start(settings.tracking_uri, plan.experiment, run_name=plan.name, tags=tags)
    study.set_user_attr(PARENT_ATTR, tracker.run_id)
    study.set_user_attr("mlflow_tracking_uri", settings.tracking_uri)
    study.set_user_attr("mlflow_experiment", plan.experiment)
    params = {
        "study_file": plan.path,
        "sampler": plan.sampler,
        "pruner": plan.spec.pruner.type,
        "metric": plan.metric,
        "direction": plan.direction,
        "objective": plan.spec.objective,
        "total_trials": plan.total_trials,
        "max_retries": plan.spec.max_retries,
        **{f"grid.{k}": ", ".join(map(str, v)) for k, v in plan.grid.items()},
        **{f"search_space.{k}": p.describe() for k, p in plan.search_space.items()},
        **{f"base.{k}": v for k, v in plan.base.items()},
    }
    tracker.log_params(params)
    if plan.text:
        tracker.log_text(plan.text, "study.yaml")
    return tracker.run_id


# -- one worker --------------------------------------------------------------------------------
class _Claim:
    DONE = "done"
    WAIT = "wait"
    LIMIT = "limit"


class _Worker:
    """One worker process's view of the study (storage, study, lock, MLflow parent)."""

    def __init__(self, plan: StudyPlan, settings: RunSettings, index: int):
        import optuna

        _quiet_optuna()
        self.plan = plan
        self.settings = settings
        self.index = index
        self.on_dead = DeadTrialHandler(plan, settings.tracking_uri, settings.grace_period)
        self.storage = open_storage(
            settings.storage_url,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            on_dead_trial=self.on_dead,
        )
        try:
            self.study = optuna.load_study(
                study_name=plan.name,
                storage=self.storage,
                sampler=make_sampler(plan, index),
                pruner=make_pruner(plan),
            )
        except KeyError:
            raise AblateError(
                f"study {plan.name!r} does not exist in {display_url(settings.storage_url)}"
            ) from None
        self.study_id = self.storage.get_study_id_from_name(plan.name)
        self.parent_run_id = self.storage.get_study_user_attrs(self.study_id).get(PARENT_ATTR)
        self.lock = StudyLock(settings.storage_url, plan.name)
        self.identity = process_identity()

    def close(self) -> None:
        self.lock.close()
        try:
            self.storage.engine.dispose()
        except Exception:
            pass

    def _trial_id(self, trial: Any) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    # -- under the lock ------------------------------------------------------------------
    def reap(self) -> None:
        """Fail RUNNING trials whose worker is gone (this machine) or silent (anywhere)."""
        import optuna
        from optuna.trial import TrialState

        for trial in self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
        ):
            worker = trial.system_attrs.get(st.WORKER_ATTR)
            if not is_dead(worker):
                continue
            trial_id = self._trial_id(trial)
            try:
                if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            failed = copy.deepcopy(self.storage.get_trial(trial_id))
            self.on_dead(
                self.study,
                failed,
                reason=f"its worker process (pid {worker.get('pid')} on {worker.get('host')}) "
                "is gone",
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(self.study)

    def claim(self) -> int | str:
        """Choose and claim the next trial; or DONE / WAIT (others still running) / LIMIT."""
        from optuna.trial import TrialState, create_trial

        self.reap()
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        limit = self.settings.max_trials
        if limit is not None:
            mine = sum(
                1
                for t in trials
                if t.state != TrialState.WAITING
                and t.system_attrs.get(st.INVOCATION_ATTR) == self.settings.invocation
            )
            if mine >= limit:
                return _Claim.LIMIT
        trial_id: int | None = None
        if self.plan.is_grid:
            cells = st.cell_states(self.plan, trials)
            for cell in self.plan.cells:
                state = cells[cell.key]
                if state.done or state.running:
                    continue
                if state.waiting:
                    trial_id = self._trial_id(state.waiting[0])
                    break
                if state.attempts_failed >= 1 + self.plan.spec.max_retries:
                    continue  # given up on this cell
                template = create_trial(
                    state=TrialState.WAITING,
                    system_attrs={"fixed_params": dict(cell.params)},
                    user_attrs={st.CELL_ATTR: cell.key},
                )
                trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
                break
            running = any(c.running for c in cells.values())
        else:
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            n_trials = self.plan.spec.n_trials
            if waiting:
                trial_id = self._trial_id(waiting[0])
            elif n_trials is None or st.sampled_used(trials) < n_trials:
                trial_id = self.storage.create_new_trial(
                    self.study_id, template_trial=create_trial(state=TrialState.WAITING)
                )
            running = any(t.state == TrialState.RUNNING for t in trials)
        if trial_id is None:
            return _Claim.WAIT if running else _Claim.DONE
        # Who runs it, and a first heartbeat, before it becomes RUNNING: a trial is never
        # RUNNING without a way to tell that its worker died.
        self.storage.set_trial_system_attr(trial_id, st.WORKER_ATTR, self.identity)
        self.storage.set_trial_system_attr(trial_id, st.INVOCATION_ATTR, self.settings.invocation)
        self.storage.record_heartbeat(trial_id)
        if not self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
            return _Claim.WAIT  # cannot happen under the lock; look again
        return trial_id

    # -- outside the lock ----------------------------------------------------------------
    def run(self) -> int:
        """Claim and run trials until the study is done, the limit or the deadline is hit."""
        ran = 0
        while True:
            deadline = self.settings.deadline
            if deadline is not None and time.time() >= deadline:
                break
            with self.lock:
                claim = self.claim()
            if claim in (_Claim.DONE, _Claim.LIMIT):
                break
            if claim == _Claim.WAIT:  # other workers' trials are running; they may die
                pause = self.settings.poll_interval
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - time.time()))
                time.sleep(pause)
                continue
            self.run_trial(int(claim))
            ran += 1
        return ran

    def run_trial(self, trial_id: int) -> str:
        """Train one claimed trial and tell Optuna how it ended; returns the state name."""
        import optuna
        from optuna.trial import TrialState

        # The study object reads through Optuna's per-process trial cache, which learns
        # about trials created through the plain storage (the claim) only when it syncs.
        self.study.get_trials(deepcopy=False)
        trial = optuna.Trial(self.study, trial_id)
        run: dict[str, Any] = {"trial_id": trial_id}
        with Heartbeat(self.storage, trial_id, self.settings.heartbeat_interval):
            try:
                value = self._objective(trial, run)
            except optuna.TrialPruned:
                return self._tell(trial, run, state=TrialState.PRUNED)
            except KeyboardInterrupt:
                self._fail(trial, run, "interrupted", "interrupted by the user", status="KILLED")
                raise
            except TrainingDiverged as err:
                self._fail(trial, run, "error", str(err))
                return "FAIL"
            except AblateError as err:
                self._fail(trial, run, "setup", str(err))
                raise
            except Exception as err:
                self._fail(trial, run, "error", f"{type(err).__name__}: {err}")
                raise
        return self._tell(trial, run, values=value)

    def _objective(self, trial: Any, run: dict[str, Any]) -> float:
        import optuna

        from ablate.tracking import Tracker
        from ablate.train import Pruned, train

        params = suggest(trial, self.plan)
        run_name = _run_name(self.plan, trial.number, params)
        cfg = self.plan.trial_config(
            params,
            experiment=self.plan.experiment,
            tracking_uri=self.settings.tracking_uri,
            run_name=run_name,
            quiet=True,
        )
        tracker = Tracker.start(
            self.settings.tracking_uri,
            self.plan.experiment,
            run_name=run_name,
            tags=self._tags(trial, run["trial_id"], params, cfg),
            parent_run_id=self.parent_run_id,
        )
        run["tracker"] = tracker
        trial.set_user_attr(st.RUN_ATTR, tracker.run_id)
        follow = _FollowMetric(trial, self.plan)
        try:
            train(cfg, tracker=tracker, on_epoch=follow)
        except Pruned as err:
            raise optuna.TrialPruned(str(err)) from err
        value = follow.value()
        if value is None:
            raise TrainingDiverged(f"no finite {self.plan.metric} was reported after epoch 0")
        return value

    def _tags(self, trial: Any, trial_id: int, params: dict[str, Any], cfg: Any) -> dict[str, Any]:
        import torch

        from ablate.tracking import RUN_TAGS
        from ablate.train import resolve_device

        tags: dict[str, Any] = {k: getattr(cfg, k) for k in RUN_TAGS}
        tags.update(
            {
                "study": self.plan.name,
                "role": "trial",
                "optuna.study_name": self.plan.name,
                "optuna.trial_number": trial.number,
                "torch": torch.__version__,
                "device": str(resolve_device(cfg.device)),
            }
        )
        tags.update({f"optuna.param.{k}": v for k, v in params.items()})
        frozen = self.storage.get_trial(trial_id)
        history = frozen.system_attrs.get("retry_history") or []
        if history:
            tags["optuna.retry_of"] = history[0]
        cell = frozen.user_attrs.get(st.CELL_ATTR)
        if cell is not None:
            tags["optuna.cell"] = cell
            # 1 for the cell's first run; more after failed runs of the same cell
            earlier = [
                t
                for t in self.storage.get_all_trials(self.study_id, deepcopy=False)
                if t.user_attrs.get(st.CELL_ATTR) == cell
                and t.number < trial.number
                and t.state.is_finished()
            ]
            tags["optuna.attempt"] = len(earlier) + 1
        return tags

    def _tell(self, trial: Any, run: dict[str, Any], **kwargs: Any) -> str:
        import optuna
        from optuna.trial import TrialState

        wanted = kwargs.get("state", TrialState.COMPLETE)
        try:
            frozen = self.study.tell(trial, skip_if_finished=True, **kwargs)
            told = frozen.state
        except optuna.exceptions.UpdateFinishedTrialError:
            told = TrialState.FAIL
        tracker = run.get("tracker")
        if told != wanted:
            # Another worker failed this trial meanwhile (its heartbeat came too late): its
            # cell runs again, so this run must not count in comparisons.
            if tracker is not None:
                try:
                    tracker.set_tags(
                        {
                            "trial_state": "FAIL",
                            "failure_reason": "the trial was failed by another worker "
                            "(heartbeat lost) and runs again",
                        }
                    )
                    tracker.client.set_terminated(tracker.run_id, status="FAILED")
                except Exception:
                    pass
            return "FAIL"
        if tracker is not None and wanted == TrialState.COMPLETE:
            tracker.set_tags({"trial_state": "COMPLETE"})
            value = float(kwargs["values"])
            tracker.log_metrics({"objective": value}, step=0)
            if self.parent_run_id:
                try:
                    tracker.client.log_metric(
                        self.parent_run_id, "objective", value, step=trial.number
                    )
                except Exception:
                    pass  # the parent's history chart only
        return told.name

    def _fail(
        self, trial: Any, run: dict[str, Any], kind: str, message: str, status: str = "FAILED"
    ) -> None:
        import optuna
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_system_attr(run["trial_id"], st.FAIL_KIND_ATTR, kind)
            self.storage.set_trial_user_attr(run["trial_id"], st.ERROR_ATTR, _one_line(message))
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        tracker = run.get("tracker")
        if tracker is None:
            return
        try:
            if tracker.client.get_run(tracker.run_id).info.status == "RUNNING":
                # ``train`` closes its run itself, except when it fails before starting
                # (data or model errors): close it here with the reason.
                tracker.end(status, _one_line(message, 5000))
            tracker.set_tags({"trial_state": "FAIL"})
        except Exception:
            pass


class _FollowMetric:
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
        from ablate.train import Pruned

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
            params[key] = trial.suggest_int(
                key, int(spec.low), int(spec.high), step=int(spec.step or 1)
            )
        else:
            params[key] = trial.suggest_float(
                key, spec.low, spec.high, step=spec.step, log=spec.type == "log_float"
            )
    return params


def _run_name(plan: StudyPlan, number: int, params: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    name = f"{plan.name}#{number} " + " ".join(f"{k}={short(v)}" for k, v in params.items())
    return name.strip()[:250]


def run_worker(plan: StudyPlan, settings: RunSettings, index: int = 0) -> int:
    """Run trials of an already prepared study in this process; returns how many."""
    worker = _Worker(plan, settings, index)
    try:
        return worker.run()
    finally:
        worker.close()


def _worker_process(plan: StudyPlan, settings: RunSettings, index: int, queue: Any) -> None:
    """Entry point of a spawned worker process: reports (index, status, trials, message)."""

    stopping = False

    def stop(signum: int, frame: Any) -> None:
        # First SIGINT (Ctrl-C reaches the whole process group) or SIGTERM (from the main
        # process): stop like Ctrl-C. Later ones are ignored so that the running trial is
        # still told FAIL(interrupted) and its MLflow run closed.
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        # N processes on this machine share its cores instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    try:
        queue.put((index, "ok", run_worker(plan, settings, index), ""))
    except KeyboardInterrupt:
        queue.put((index, "interrupted", 0, "interrupted"))
    except AblateError as err:
        queue.put((index, "error", 0, str(err)))
    except BaseException as err:
        traceback.print_exc()
        queue.put((index, "crash", 0, f"{type(err).__name__}: {_one_line(err, 300)}"))


# -- the whole command --------------------------------------------------------------------------
def run_study(
    plan: StudyPlan,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    workers: int = 1,
    max_trials: int | None = None,
    timeout: float | None = None,
    quiet: bool = False,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    poll_interval: float = 2.0,
) -> StudyOutcome:
    """Create or resume ``plan``'s study and run it until done (or a limit) on this machine.

    Args:
        plan: a loaded study file (:func:`ablate.study.load_study`).
        storage: Optuna storage URL (default: the file's ``storage``, else ``sqlite:///ablate-optuna.db``).
        tracking_uri: MLflow store (default: the file's ``base.tracking_uri``,
            $MLFLOW_TRACKING_URI,
            else ``sqlite:///mlflow.db``).
        workers: worker processes on this machine (spawned; 1 = run in this process).
        max_trials: run at most this many trials now (all workers together).
        timeout: start no new trial after this many seconds (default: the file's ``timeout``).
        quiet: no progress bar and no per-trial lines.
        heartbeat_interval / grace_period: crash detection, in seconds.
        poll_interval: seconds an idle worker waits for other workers' trials.
    """
    from ablate.study.report import Progress, summarize
    from ablate.tracking import resolve_tracking_uri

    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    if max_trials is not None and max_trials < 1:
        raise ConfigError(f"--trials: must be >= 1, got {max_trials}")
    timeout = timeout if timeout is not None else plan.spec.timeout
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout: must be > 0 seconds, got {timeout}")
    if not plan.is_grid and plan.spec.n_trials is None and timeout is None and max_trials is None:
        raise ConfigError(
            f"{plan.path}: n_trials: a search study needs n_trials or timeout (or run it with "
            "--trials N / --timeout S)"
        )
    url = resolve_storage_url(storage or plan.spec.storage)
    if workers > 1 and url.startswith("sqlite") and ":memory:" in url:
        raise ConfigError(
            "--workers: an in-memory SQLite storage cannot be shared by worker processes"
        )
    settings = RunSettings(
        storage_url=url,
        tracking_uri=resolve_tracking_uri(tracking_uri or plan.base.get("tracking_uri")),
        workers=workers,
        max_trials=max_trials,
        deadline=None if timeout is None else time.time() + timeout,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        poll_interval=poll_interval,
    )
    parent = prepare_study(plan, settings)
    progress = Progress(plan, settings, enabled=not quiet)
    errors: list[str] = []
    ran = 0
    progress.start()
    try:
        if workers == 1:
            try:
                ran = run_worker(plan, settings, 0)
            except AblateError as err:
                errors.append(str(err))
        else:
            ran, errors = _run_processes(plan, settings)
    finally:
        progress.stop()
        outcome = summarize(plan, settings, parent, ran, errors)
    return outcome


def _run_processes(plan: StudyPlan, settings: RunSettings) -> tuple[int, list[str]]:
    import multiprocessing
    import queue as queue_module

    ctx = multiprocessing.get_context("spawn")  # never fork a process holding DB connections
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(plan, settings, i, results),
            name=f"ablate-study-worker-{i}",
        )
        for i in range(settings.workers)
    ]
    for p in procs:
        p.start()
    interrupted = False
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.5)
    except KeyboardInterrupt:
        interrupted = True
        # Ctrl-C in a terminal reached the workers too; give them a moment to mark their
        # trials interrupted and close their MLflow runs, then ask the others to stop.
        end = time.time() + 10
        for p in procs:
            p.join(timeout=max(0.0, end - time.time()))
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()  # its trial is failed as dead at the next start
    ran, errors, reported = 0, [], set()
    while True:
        try:
            index, status, count, message = results.get(timeout=0.2)
        except (queue_module.Empty, EOFError, OSError):
            break
        reported.add(index)
        ran += count
        if status == "error":
            errors.append(message)
        elif status == "crash":
            errors.append(f"worker {index} crashed: {message} (traceback above)")
    for index, p in enumerate(procs):
        if index in reported or interrupted:
            continue
        how = (
            f"was killed by signal {-p.exitcode}"
            if (p.exitcode or 0) < 0
            else f"exited with status {p.exitcode}"
        )
        errors.append(
            f"worker {index} {how} before reporting (see its output above); rerun the command "
            "to finish the study"
        )
    if interrupted:
        raise KeyboardInterrupt
    return ran, errors
