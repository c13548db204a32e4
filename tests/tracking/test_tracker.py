"""The MLflow adapter on a real SQLite store: opening runs, logging, and every way a run ends.

``ablate.tracking`` is the only code that creates, tags, ends or changes the status of a
run (tests/test_architecture.py checks that); these tests pin what each lifecycle method
leaves in the store, read back through a plain ``MlflowClient``.
"""

from __future__ import annotations

import json

import pytest

from ablate.tracking import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT_TAGS,
    Tracker,
    git_commit,
    resolve_tracking_uri,
)
from ablate.tracking import conventions as cv
from ablate.tracking.tracker import STOPS, LeaseLost


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); runs are
    independent, so the tests do not see each other's."""
    folder = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)  # the store's artifacts go to ./mlruns
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
        yield folder


@pytest.fixture
def workdir(store):
    return store


@pytest.fixture
def uri(store):
    return f"sqlite:///{store}/mlflow.db"


@pytest.fixture(scope="module")
def client(store):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{store}/mlflow.db")


def _run(client, tracker):
    return client.get_run(tracker.run_id)


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == DEFAULT_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None) == "sqlite:///env.db"
    assert resolve_tracking_uri("sqlite:///flag.db") == "sqlite:///flag.db"


def test_start_opens_a_tagged_running_run_under_its_parent(uri, client):
    parent = Tracker.start(uri, "exp", run_name="parent", tags={"role": "study", "none": None})
    child = Tracker.start(uri, "exp", run_name="child", parent_run_id=parent.run_id)
    run = _run(client, child)
    assert run.info.status == cv.RUNNING and run.info.run_name == "child"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    commit = git_commit()  # this checkout is a git repository
    assert commit and run.data.tags["mlflow.source.git.commit"] == commit
    assert "none" not in _run(client, parent).data.tags  # None values are not logged
    exp = client.get_experiment_by_name("exp")
    assert exp.tags["mlflow.experimentKind"] == EXPERIMENT_TAGS["mlflow.experimentKind"]
    assert run.info.experiment_id == exp.experiment_id


def test_logging_batches_params_metrics_tags_and_artifacts(uri, client, workdir):
    tracker = Tracker.start(uri, "exp")
    tracker.log_params({f"p{i}": i for i in range(250)})  # > 100 per call: batched
    tracker.log_metrics({"acc/val": 0.5, "skipped": None}, step=0)
    tracker.log_metrics({"acc/val": 0.75}, step=1)
    tracker.set_tags({"sdpa_backend": "math"})
    (workdir / "last.pt").write_bytes(b"x")
    tracker.log_artifact(workdir / "last.pt", "checkpoints")
    tracker.log_text("a,b\n", "trials.csv")
    data = _run(client, tracker).data
    assert len(data.params) == 250 and data.params["p249"] == "249"
    assert tracker.metric_history("acc/val") == [(0, 0.5), (1, 0.75)]
    assert "skipped" not in data.metrics
    assert data.tags["sdpa_backend"] == "math"
    assert tracker.list_artifacts("checkpoints") == ["checkpoints/last.pt"]
    assert "trials.csv" in tracker.list_artifacts()
    got = tracker.download_artifact("trials.csv", workdir / "dl")
    assert got.read_text() == "a,b\n"


def test_attach_reopens_and_find_tells_missing_and_deleted_runs(uri, client):
    tracker = Tracker.start(uri, "exp")
    tracker.end(cv.KILLED, "interrupted")
    tracker.set_tags({cv.STOP_REASON: "preempted"})
    again = Tracker.attach(uri, tracker.run_id)
    assert again.status() == cv.RUNNING
    # the reason it stopped goes with the stop: a resumed run that finishes carries none
    assert not {cv.FAILURE_REASON, cv.STOP_REASON} & set(_run(client, again).data.tags)
    assert Tracker.find(uri, tracker.run_id).run_id == tracker.run_id
    assert Tracker.find(uri, "0" * 32) is None
    client.delete_run(tracker.run_id)
    assert Tracker.find(uri, tracker.run_id) is None


def test_close_orphan_fails_a_running_run_once(uri, client):
    tracker = Tracker.start(uri, "exp")
    assert tracker.close_orphan("trial 3 failed: its worker process is gone") is True
    run = _run(client, tracker)
    assert run.info.status == cv.FAILED
    assert run.data.tags[cv.TRIAL_STATE] == "FAIL"
    assert run.data.tags[cv.FAILURE_REASON] == "trial 3 failed: its worker process is gone"
    # A retry copies the dead trial's run id: a closed predecessor is left as it is.
    assert Tracker(uri, tracker.run_id).close_orphan("another reason") is False
    assert _run(client, tracker).data.tags[cv.FAILURE_REASON].startswith("trial 3")


def test_a_retried_trial_continues_the_orphaned_run(uri, client):
    tracker = Tracker.start(uri, "exp", tags={"optuna.trial_number": 3})
    tracker.close_orphan("no heartbeat")
    resumed = Tracker.attach(uri, tracker.run_id)
    resumed.continue_trial({"optuna.trial_number": 5, "optuna.retry_of": 3})
    run = _run(client, tracker)
    assert run.info.status == cv.RUNNING
    assert cv.FAILURE_REASON not in run.data.tags
    assert run.data.tags[cv.TRIAL_STATE] == "RUNNING"
    assert run.data.tags["optuna.trial_number"] == "5"


def test_a_run_taken_over_fences_off_its_old_owner_and_keeps_its_stops(uri, client):
    first = Tracker.start(uri, "exp")
    first.check_lease()  # its own run: fine
    first.stop("preempted", "stopped by SIGTERM (preempted)", epoch=3)
    second = Tracker.attach(uri, first.run_id)  # the retry, elsewhere
    second.resumed(3)
    with pytest.raises(LeaseLost, match=f"run {first.run_id} was taken over"):
        first.check_lease()
    first.supersede("runs again")  # the old owner cannot fail the run its successor trains
    second.resumed(2)  # killed without a word, resumed again from an older checkpoint
    run = _run(client, second)
    assert run.info.status == cv.RUNNING and run.data.tags["resumed_from_epoch"] == "2"
    assert json.loads(run.data.tags[STOPS]) == [
        {"reason": "preempted", "epoch": 3, "resumed": 3},
        {"reason": "unrecorded", "epoch": 2, "resumed": 2}]


def test_supersede_and_fail_trial(uri, client):
    first = Tracker.start(uri, "exp")
    first.supersede("the trial was failed by another worker (heartbeat lost) and runs again")
    run = _run(client, first)
    assert (run.info.status, run.data.tags[cv.TRIAL_STATE]) == (cv.FAILED, "FAIL")
    assert "runs again" in run.data.tags[cv.FAILURE_REASON]
    second = Tracker.start(uri, "exp")
    second.fail_trial("x" * (cv.REASON_LIMIT + 10), status=cv.KILLED)
    run = _run(client, second)
    assert run.info.status == cv.KILLED
    assert len(run.data.tags[cv.FAILURE_REASON]) == cv.REASON_LIMIT


def test_a_study_parent_is_resumed_and_summarised(uri, client):
    parent = Tracker.start(uri, "exp", tags={"role": "study"})
    parent.close_study(complete=False, failures=False, trials_running=True)
    run = _run(client, parent)  # other workers still run trials: stays open
    assert (run.info.status, run.data.tags[cv.STUDY_STATE]) == (cv.RUNNING, "incomplete")
    parent.close_study(complete=False, failures=False, trials_running=False)
    assert parent.status() == cv.KILLED  # stopped early; the next command resumes it
    parent.resume()
    assert parent.status() == cv.RUNNING
    parent.resume()  # already running: nothing changes
    child = parent.other(Tracker.start(uri, "exp").run_id)
    child.log_metrics({"objective": 0.9}, step=4)
    assert child.client is parent.client and child.metric_history("objective") == [(4, 0.9)]
    parent.close_study(complete=True, failures=True, trials_running=False)
    run = _run(client, parent)
    assert run.info.status == cv.FINISHED
    assert run.data.tags[cv.STUDY_STATE] == "complete_with_failed_cells"


def test_study_state_names():
    assert cv.study_state(False, True) == "incomplete"
    assert cv.study_state(True, False) == "complete"
    assert cv.study_state(True, True) == "complete_with_failed_cells"
