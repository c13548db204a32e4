"""A study worker: claim a trial under the study lock, run it, tell Optuna how it ended.

Data flow per worker (one process; ``--workers N`` starts N of them, other machines run
the same command against the same server storage)::

    loop:  with StudyLock:  reap dead trials -> choose a cell / new trial -> claim it
           heartbeat thread -> resolve(trial config) -> run_trial(..., on_epoch=report + prune)
           -> tell(value | PRUNED | FAIL)

Why not ``study.optimize`` with ``GridSampler``: with several workers (and failed
trials) those can run a grid cell twice or skip it. Here every grid cell is a WAITING trial
created only under the study lock, and only when the cell has no COMPLETE, PRUNED,
RUNNING or WAITING trial, so each cell finishes exactly once. A trial whose worker died is
failed and retried (:mod:`ablate.study.recovery`); the retry resumes the dead trial's MLflow
run from its last checkpoint (from epoch 0 when it had none), so epochs already trained are
not trained again and a cell keeps one run. A worker whose trial was handed on while it was
paused finds the run's lease taken (:meth:`ablate.tracking.Tracker.check_lease`) and stops
without writing to the run or telling the trial.
"""

from __future__ import annotations

import copy
import time
import traceback
import warnings
from typing import Any

from ablate.exceptions import AblateError, Pruned, Stopped, TrainingDiverged
from ablate.study import state as st
from ablate.study.common import PARENT_ATTR, RunSettings, one_line, quiet_optuna
from ablate.study.recovery import DeadTrialHandler, hand_over
from ablate.study.sampling import FollowMetric, make_pruner, make_sampler, suggest
from ablate.study.spec import StudyPlan
from ablate.study.state import STOPPED
from ablate.study.storage import (
    StorageUnavailable,
    StudyLock,
    display_url,
    heartbeat,
    is_dead,
    open_storage,
    process_identity,
)
from ablate.tracking.tracker import LeaseLost, ResumableError, TrackingUnavailable
from ablate.trial.stopping import StopSignals, check, critical

__all__ = ["run_worker", "worker_process"]


class _Claim:
    DONE = "done"
    WAIT = "wait"
    LIMIT = "limit"


class _Worker:
    """One worker process's view of the study (storage, study, lock, MLflow parent)."""

    def __init__(self, plan: StudyPlan, settings: RunSettings, index: int):
        import optuna

        quiet_optuna()
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
        # round-robin over --devices; None: the study file's own `device`
        self.device = settings.devices[index % len(settings.devices)] if settings.devices else None

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
        try:
            return self._run()
        except (StorageUnavailable, ResumableError) as err:  # resumes from its checkpoint
            resume = self.plan.resume_command(self.settings.storage_url)
            raise AblateError(f"{err}; once fixed, continue with: {resume}") from None

    def _run(self) -> int:
        ran = 0
        while True:
            check()  # a stop that arrived while the last trial was told
            deadline = self.settings.deadline
            if deadline is not None and time.time() >= deadline:
                break
            # a stop during the claim waits for it; a claimed trial is then handed over
            with self.lock, critical(raise_pending=False):
                claim = self.claim()
            if claim in (_Claim.DONE, _Claim.LIMIT):
                break
            if claim == _Claim.WAIT:  # other workers' trials are running; they may die
                if not self.settings.wait_for_others:
                    break
                check()
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
        with heartbeat(self.storage, trial_id, self.settings.heartbeat_interval):
            try:
                value = self._objective(trial, run)
            except optuna.TrialPruned:
                return self._tell(trial, run, state=TrialState.PRUNED)
            except (Stopped, ResumableError) as err:  # preempted, time limit, Ctrl-C, a full
                if isinstance(err, TrackingUnavailable):  # disk, the MLflow store gone: the
                    run.pop("tracker", None)  # next worker resumes; a gone store gets nothing
                self._fail(trial, run, STOPPED, f"{err}; it resumes from its last checkpoint",
                           status="KILLED")
                hand_over(self.study, self.storage, trial_id, self.plan)
                raise
            except KeyboardInterrupt:
                self._fail(trial, run, "interrupted", "interrupted by the user", status="KILLED")
                raise
            except (StorageUnavailable, LeaseLost):  # nothing to tell; a lost run is not ours
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
        with critical(raise_pending=False):  # a finished trial is told, whatever comes
            return self._tell(trial, run, values=value)

    def _objective(self, trial: Any, run: dict[str, Any]) -> float:
        import optuna

        check()  # stopped while claiming: hand the trial over before any work

        from ablate.trial.run import resolve, run_trial, trial_name

        params = suggest(trial, self.plan)
        # not quiet unless the command is (--quiet sets base.quiet): one line per epoch in a
        # log, named by the run name
        local: dict[str, Any] = dict(
            experiment=self.plan.experiment, tracking_uri=self.settings.tracking_uri
        )
        if self.device is not None:
            local["device"] = self.device
        cfg = self.plan.trial_config(params, **local)
        resolved = resolve(cfg)  # bad input fails here, before any MLflow run exists
        frozen = self.storage.get_trial(run["trial_id"])
        resume = self._resumable_run(frozen)
        tags = self._tags(trial, frozen, params)

        def opened(tracker: Any) -> None:
            run["tracker"] = tracker
            trial.set_user_attr(st.RUN_ATTR, tracker.run_id)
            if resume:  # the run continues under this trial: its tags follow
                tracker.continue_trial(tags)

        follow = FollowMetric(trial, self.plan)
        try:
            run_trial(
                resolved,
                on_epoch=follow,
                parent_run_id=self.parent_run_id,
                extra_tags=tags,
                run_name=trial_name(resolved, prefix=f"{self.plan.name}#{trial.number}"),
                resume_run_id=resume,
                on_run_open=opened,
            )
        except Pruned as err:
            raise optuna.TrialPruned(str(err)) from err
        value = follow.value()
        if value is None:
            raise TrainingDiverged(f"no finite {self.plan.metric} was reported after epoch 0")
        return value

    def _resumable_run(self, frozen: Any) -> str | None:
        """The MLflow run of the trial this one retries: it continues there, from its last
        checkpoint or from epoch 0, so a cell keeps one run."""
        from ablate.tracking import Tracker

        run_id = frozen.user_attrs.get(st.RUN_ATTR)  # copied from the failed trial
        if not frozen.system_attrs.get("retry_history") or not run_id:
            return None
        return run_id if Tracker.find(self.settings.tracking_uri, run_id) else None

    def _tags(self, trial: Any, frozen: Any, params: dict[str, Any]) -> dict[str, Any]:
        # the trial's parameters are the run's params already (the effective configuration)
        tags: dict[str, Any] = {"study": self.plan.name, "role": "trial",
                                "optuna.trial_number": trial.number}
        history = frozen.system_attrs.get("retry_history") or []
        if history:
            tags["optuna.retry_of"] = history[-1]
        cell = frozen.user_attrs.get(st.CELL_ATTR)
        if cell is not None:  # attempt 1 is the cell's first run; more after failed ones
            earlier = sum(
                t.user_attrs.get(st.CELL_ATTR) == cell and t.number < trial.number
                and t.state.is_finished()
                for t in self.storage.get_all_trials(self.study_id, deepcopy=False)
            )
            tags.update({"optuna.cell": cell, "optuna.attempt": earlier + 1})
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
                    tracker.supersede(
                        "the trial was failed by another worker (heartbeat lost) and runs again"
                    )
                except Exception:
                    pass
            return "FAIL"
        if tracker is not None and wanted == TrialState.COMPLETE:
            tracker.set_trial_state("COMPLETE")
            parent = tracker.other(self.parent_run_id) if self.parent_run_id else None
            tracker.record_objective(float(kwargs["values"]), parent, trial.number)
        return told.name

    def _fail(
        self, trial: Any, run: dict[str, Any], kind: str, message: str, status: str = "FAILED"
    ) -> None:
        import optuna
        from optuna.trial import TrialState

        try:
            self.storage.set_trial_system_attr(run["trial_id"], st.FAIL_KIND_ATTR, kind)
            self.storage.set_trial_user_attr(run["trial_id"], st.ERROR_ATTR, one_line(message))
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        tracker = run.get("tracker")
        if tracker is None:
            return
        try:
            if tracker.status() == "RUNNING":
                # ``run_trial`` ends its run itself; a run still RUNNING here was never
                # owned (it failed while opening): close it with the reason.
                tracker.fail_trial(one_line(message, 5000), status)
            else:
                tracker.set_trial_state("FAIL")
        except Exception:
            pass


def run_worker(plan: StudyPlan, settings: RunSettings, index: int = 0) -> int:
    """Run trials of an already prepared study in this process; returns how many."""
    worker = _Worker(plan, settings, index)
    try:
        return worker.run()
    finally:
        worker.close()


def worker_process(plan: StudyPlan, settings: RunSettings, index: int, queue: Any) -> None:
    """Entry point of a spawned worker process: reports (index, status, trials, message)."""
    # SIGTERM / SIGINT (Ctrl-C reaches the whole process group) / SIGUSR1: the running
    # trial is handed over (ablate.trial.stopping); later signals wait for that to finish.
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)
    try:
        with StopSignals():
            queue.put((index, "ok", run_worker(plan, settings, index), ""))
    except KeyboardInterrupt as err:
        queue.put((index, "interrupted", 0, str(err) or "interrupted"))
    except AblateError as err:
        queue.put((index, "error", 0, str(err)))
    except BaseException as err:
        traceback.print_exc()
        queue.put((index, "crash", 0, f"{type(err).__name__}: {one_line(err, 300)}"))
