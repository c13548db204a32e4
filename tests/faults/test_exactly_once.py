"""Exactly once at the two edges of a run (issue #25, items 4 and 5): a stop before epoch 1
(no checkpoint yet) and a stop right after the test metrics, each a real signal into a real
study on SQLite stores; the study then finishes with one MLflow run for its cell, each
metric once per step, one ``final`` and one ``best`` logged model, and the run's ``stops`` history
saying what happened to it."""

from __future__ import annotations

import json
import signal

import pytest
from mlflow import MlflowClient

from ablate.exceptions import Stopped
from ablate.study import load_study, run_study
from ablate.tracking.conventions import VAL_ACC
from faults.conftest import signal_when

STUDY = """\
name: edges
base: {dataset: digits, img_size: 8, epochs: 2, batch_size: 128, checkpoint_dir: checkpoints,
       system_metrics: false, quiet: true}
grid: {seed: [0]}
"""


@pytest.mark.slow
def test_stops_before_epoch_1_and_after_the_test_metrics_leave_one_run_per_cell(workdir):
    path = workdir / "edges.yaml"
    path.write_text(STUDY)
    plan = load_study(path)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    client.search_experiments()  # its tables exist before a watcher reads them

    def trial_runs(extra: str = "") -> list:
        experiments = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(experiments, f"tags.role = 'trial'{extra}")

    def study() -> object:
        return run_study(plan, storage=f"sqlite:///{workdir}/optuna.db", quiet=True)

    # 1. SIGTERM as soon as the first trial's run exists: before its first checkpoint
    with signal_when(lambda: bool(trial_runs()), signal.SIGTERM), pytest.raises(Stopped):
        study()
    (first,) = trial_runs()
    run_id = first.info.run_id
    assert [m.step for m in client.get_metric_history(run_id, VAL_ACC)] in ([], [0])
    assert not (workdir / "checkpoints" / run_id / "last.pt").exists()

    # 2. the retry continues that run; SIGUSR2 once its test metrics are logged
    with signal_when(lambda: bool(trial_runs(" and metrics.test_acc >= 0")), signal.SIGUSR2):
        with pytest.raises(Stopped):
            study()
    stopped = client.get_run(run_id)
    assert stopped.info.status == "KILLED" and "test_acc" in stopped.data.metrics

    # 3. the run ends, once
    assert study().complete
    runs = trial_runs()
    assert [r.info.run_id for r in runs] == [run_id]
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags.get("failure_reason")
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {steps}"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, VAL_ACC)]
        assert sorted(steps) == [0, 1, 2]
        models = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        assert sorted((m.tags["ablate.weights"], m.status) for m in models) == [
            ("best", "READY"), ("final", "READY")]
    tags = client.get_run(run_id).data.tags
    stops = json.loads(tags["stops"])  # what happened to the run, in one place
    assert [(s["reason"], s["resumed"]) for s in stops] == [("preempted", 0), ("time_limit", 2)]
    assert stops[1]["epoch"] == 2 and "stop_reason" not in tags
