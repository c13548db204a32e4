"""Fencing (issue #25, item 9): a worker paused with SIGSTOP past the heartbeat grace loses
its trial to another worker, which resumes the same MLflow run; woken with SIGCONT, the
stale worker finds the run's lease taken and stops with one line, having written nothing."""

from __future__ import annotations

import json
import os
import signal
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from study_cli import study_cli  # tests/ helper

from ablate.study import load_study, run_study
from ablate.study.storage import open_storage
from ablate.tracking.conventions import VAL_ACC
from ablate.tracking.tracker import LEASE
from faults.conftest import signal_when

EPOCHS = 6
STUDY = f"""\
name: paused
base: {{dataset: digits, img_size: 8, epochs: {EPOCHS}, batch_size: 128,
        checkpoint_dir: checkpoints, system_metrics: false}}
grid: {{seed: [0]}}
"""


@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")  # made by MLflow once per session
def test_a_paused_worker_never_writes_into_the_run_its_successor_resumed(workdir):
    path = workdir / "paused.yaml"
    path.write_text(STUDY)
    storage = f"sqlite:///{workdir}/optuna.db"
    stale = study_cli(workdir, str(path), "--storage", storage, threads=1)
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run_id, deadline = None, time.time() + 300
    while run_id is None and time.time() < deadline:
        time.sleep(0.1)
        assert stale.poll() is None, stale.stdout.read()
        if not list((workdir / "checkpoints").glob("*")):
            continue  # no trial trains yet (the storage may still be being created)
        # paused in the middle of epoch 3: its epoch 2 is told to Optuna (a SQLite writer
        # paused mid-write would lock out every other process, which PostgreSQL would not)
        trials = _trials(storage)
        if trials and max(trials[0].intermediate_values, default=0) >= 2:
            run_id = trials[0].user_attrs["mlflow_run_id"]
    os.kill(stale.pid, signal.SIGSTOP)
    lease = client.get_run(run_id).data.tags[LEASE]
    try:
        # another worker (grace 2 s) fails the silent trial and resumes its run; the paused
        # one wakes as soon as the lease changed hands, while the successor trains
        taken = lambda: client.get_run(run_id).data.tags[LEASE] != lease  # noqa: E731
        with signal_when(taken, signal.SIGCONT, pid=stale.pid) as woken:
            outcome = run_study(load_study(path), storage=storage, quiet=True, grace_period=2,
                                heartbeat_interval=1, poll_interval=0.2)
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    out, _ = stale.communicate(timeout=120)
    assert woken and outcome.complete

    assert stale.returncode == 2 and "Traceback" not in out, out
    assert out.strip().splitlines()[-1].startswith(
        f"ablate study: error: run {run_id} was taken over by another process"), out
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {steps}"
    assert sorted(m.step for m in client.get_metric_history(run_id, VAL_ACC)) == list(
        range(EPOCHS + 1))
    (stop,) = json.loads(run.data.tags["stops"])
    assert stop["reason"] == "worker lost" and stop["resumed"] >= 2
    assert [t.state for t in _trials(storage)] == [TrialState.FAIL, TrialState.COMPLETE]


def _trials(storage_url: str) -> list:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name="paused", storage=storage).trials
    finally:
        storage.engine.dispose()
