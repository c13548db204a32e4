"""Dead trials: their orphaned MLflow runs are failed, and their cells retried while allowed."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from ablate.study import state as st  # noqa: E402
from ablate.study.recovery import DeadTrialHandler, close_orphan_run  # noqa: E402
from ablate.tracking import Tracker  # noqa: E402


def _frozen(state=TrialState.FAIL, run_id=None, cell=None, kind=None):
    attrs = {}
    if run_id:
        attrs[st.RUN_ATTR] = run_id
    if cell:
        attrs[st.CELL_ATTR] = cell
    trial = create_trial(state=state, user_attrs=attrs)
    if kind:
        trial.system_attrs[st.FAIL_KIND_ATTR] = kind
    return trial


def test_an_orphaned_run_is_failed_with_the_reason(settings):
    tracker = Tracker.start(settings.tracking_uri, "exp")
    close_orphan_run(settings.tracking_uri, _frozen(run_id=tracker.run_id), "trial 0 failed: gone")
    run = MlflowClient(settings.tracking_uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "trial 0 failed: gone"
    assert run.data.tags["trial_state"] == "FAIL"
    close_orphan_run(settings.tracking_uri, _frozen(), "no run: nothing to do")


def test_an_unreachable_store_is_a_warning_not_a_crash(settings, capsys):
    close_orphan_run("sqlite:////nonexistent/dir/x.db", _frozen(run_id="0" * 32), "gone")
    err = capsys.readouterr().err
    assert err.startswith(f"ablate study: warning: could not mark MLflow run {'0' * 32} failed")


def test_a_dead_trials_cell_is_retried_until_its_retries_are_used(grid_plan, settings):
    handler = DeadTrialHandler(grid_plan, settings.tracking_uri, grace_period=60)
    study = optuna.create_study(direction="maximize")
    key = grid_plan.cells[0].key
    dead = _frozen(cell=key)
    study.add_trial(dead)
    assert handler._should_retry(study, dead)  # first failure, max_retries: 1
    study.add_trial(_frozen(cell=key, kind="error"))
    assert not handler._should_retry(study, dead)  # 2 failed attempts = 1 + max_retries
    other = grid_plan.cells[1].key
    done = create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs={st.CELL_ATTR: other})
    study.add_trial(done)
    assert not handler._should_retry(study, _frozen(cell=other))  # the cell is done anyway


def test_the_handler_closes_the_run_and_enqueues_the_retry(grid_plan, settings):
    handler = DeadTrialHandler(grid_plan, settings.tracking_uri, grace_period=60)
    storage = optuna.storages.RDBStorage(settings.storage_url)
    study = optuna.create_study(study_name="grid", storage=storage, direction="maximize")
    tracker = Tracker.start(settings.tracking_uri, "exp")
    key = grid_plan.cells[0].key
    trial = study.ask()
    trial.set_user_attr(st.CELL_ATTR, key)
    trial.set_user_attr(st.RUN_ATTR, tracker.run_id)
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[0]
    handler(study, failed)
    assert tracker.status() == "FAILED"
    assert "no heartbeat for more than 60 s" in MlflowClient(settings.tracking_uri).get_run(
        tracker.run_id
    ).data.tags["failure_reason"]
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs[st.RUN_ATTR] == tracker.run_id
    assert waiting[0].system_attrs["retry_history"] == [0]
    storage.engine.dispose()
