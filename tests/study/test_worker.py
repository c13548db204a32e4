"""A study worker against a real SQLite Optuna storage and MLflow store: claiming grid cells
exactly once, the per-command trial limit, resuming a dead trial's run, and telling Optuna."""

from __future__ import annotations

import dataclasses

import pytest

optuna = pytest.importorskip("optuna")
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ablate.study import state as st  # noqa: E402
from ablate.study.parent import prepare_study  # noqa: E402
from ablate.study.worker import _Claim, _Worker  # noqa: E402
from ablate.tracking import Tracker  # noqa: E402


@pytest.fixture
def worker(grid_plan, settings):
    prepare_study(grid_plan, settings)
    made = []

    def make(**changes):
        made.append(_Worker(grid_plan, dataclasses.replace(settings, **changes), 0))
        return made[-1]

    yield make
    for w in made:
        w.close()


def _claim(w):
    with w.lock:
        return w.claim()


def test_every_grid_cell_is_claimed_once_then_the_worker_waits_then_is_done(worker, grid_plan):
    w = worker()
    claimed = [_claim(w) for _ in grid_plan.cells]
    assert all(isinstance(c, int) for c in claimed) and len(set(claimed)) == len(claimed)
    trials = w.storage.get_all_trials(w.study_id)
    assert sorted(t.user_attrs[st.CELL_ATTR] for t in trials) == sorted(
        c.key for c in grid_plan.cells
    )
    assert all(t.state == TrialState.RUNNING for t in trials)
    assert all(t.system_attrs[st.WORKER_ATTR]["pid"] for t in trials)
    assert _claim(w) == _Claim.WAIT  # the others' trials may still die
    for trial_id in claimed:
        w.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.5])
    assert _claim(w) == _Claim.DONE


def test_a_command_stops_claiming_at_its_trial_limit(worker):
    w = worker(max_trials=2)
    assert isinstance(_claim(w), int) and isinstance(_claim(w), int)
    assert _claim(w) == _Claim.LIMIT
    other_command = worker(max_trials=1, invocation="other")  # counts its own trials
    assert isinstance(_claim(other_command), int)


def _retry_of(w, run_id):
    trial_id = _claim(w)
    w.storage.set_trial_system_attr(trial_id, "retry_history", [0])
    w.storage.set_trial_user_attr(trial_id, st.RUN_ATTR, run_id)
    return w.storage.get_trial(trial_id)


def test_a_retry_continues_the_dead_trials_run_with_or_without_a_checkpoint(worker):
    w = worker()
    tracker = Tracker.start(w.settings.tracking_uri, "grid")
    assert w._resumable_run(_retry_of(w, tracker.run_id)) == tracker.run_id  # from epoch 0
    assert w._resumable_run(_retry_of(w, "0" * 32)) is None  # the run is not in the store
    assert w._resumable_run(w.storage.get_trial(_claim(w))) is None  # not a retry


def test_a_trial_trains_logs_and_reports_its_objective(worker, settings):
    w = worker()
    trial_id = _claim(w)
    assert w.run_trial(trial_id) == "COMPLETE"
    trial = w.storage.get_trial(trial_id)
    assert trial.state == TrialState.COMPLETE and 0.0 <= trial.value <= 1.0
    client = MlflowClient(settings.tracking_uri)
    run = client.get_run(trial.user_attrs[st.RUN_ATTR])
    assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
    assert run.data.tags["mlflow.parentRunId"] == w.parent_run_id
    assert run.data.tags["optuna.cell"] == trial.user_attrs[st.CELL_ATTR]
    assert run.data.tags["optuna.attempt"] == "1"
    # named apart from its siblings: study#trial, model, variant, seed
    params = st.trial_params(w.plan, trial)
    assert run.info.run_name.startswith(f"grid#{trial.number} cct_")
    assert f" {params['variant']} " in run.info.run_name
    assert run.info.run_name.endswith(f" s{params['seed']}")
    history = client.get_metric_history(w.parent_run_id, "objective")
    assert [(m.step, m.value) for m in history] == [(trial.number, trial.value)]


def test_a_result_for_a_trial_failed_meanwhile_supersedes_its_run(worker, settings):
    w = worker()
    trial_id = _claim(w)
    tracker = Tracker.start(settings.tracking_uri, "grid")
    w.study.get_trials(deepcopy=False)
    trial = optuna.Trial(w.study, trial_id)
    w.storage.set_trial_state_values(trial_id, TrialState.FAIL)  # another worker's reaper
    assert w._tell(trial, {"trial_id": trial_id, "tracker": tracker}, values=0.9) == "FAIL"
    run = MlflowClient(settings.tracking_uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "FAIL"
    assert "runs again" in run.data.tags["failure_reason"]
