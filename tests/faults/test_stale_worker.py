"""Fencing (issue #25, item 9): a worker paused with SIGSTOP past the heartbeat grace loses
its trial to another worker, which resumes the same MLflow run; woken with SIGCONT, the
stale worker finds the run's lease taken and stops with one line, having written nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import optuna
import psutil
import pytest
from cli_process import study_cli  # tests/ helper
from mlflow import MlflowClient
from optuna.trial import TrialState

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
        # paused past epoch 2, once that is told to Optuna
        trials = _trials(storage)
        if trials and max(trials[0].intermediate_values, default=0) >= 2:
            run_id = trials[0].user_attrs["mlflow_run_id"]
    _pause_holding_no_lock(stale.pid, [workdir / "mlflow.db", workdir / "optuna.db"])
    assert _trials(storage)[0].state == TrialState.RUNNING, "its trial ended before the pause"
    lease = client.get_run(run_id).data.tags[LEASE]
    try:
        # another worker (grace 2 s) fails the silent trial and resumes its run; the paused
        # one wakes as soon as the lease changed hands, while the successor trains
        taken = lambda: client.get_run(run_id).data.tags[LEASE] != lease  # noqa: E731
        with signal_when(taken, signal.SIGCONT, pid=stale.pid) as woken:
            outcome = run_study(load_study(path), storage=storage, quiet=True, grace_period=2,
                                heartbeat_interval=1, poll_interval=0.2)
    finally:
        stale.send_signal(signal.SIGCONT)
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


def _pause_holding_no_lock(pid: int, databases: list[Path], patience: float = 30) -> None:
    """SIGSTOP ``pid`` at a moment it holds no lock on any of the SQLite ``databases``.

    A process paused mid-write (or mid-read: a reader's SHARED lock blocks writers too)
    would lock every other process out of that file for good, which a PostgreSQL client
    would not; so while one is locked, let it go on a moment and pause it again."""
    deadline = time.monotonic() + patience
    while True:
        os.kill(pid, signal.SIGSTOP)
        _wait_until_stopped(pid)  # the stop lands asynchronously
        if not any(map(_locked, databases)):
            return
        os.kill(pid, signal.SIGCONT)
        assert time.monotonic() < deadline, f"never paused {pid} without a lock held"
        time.sleep(0.1)


def _wait_until_stopped(pid: int) -> None:
    """Until ``pid`` (not necessarily a child of this process) is stopped or gone."""
    process = psutil.Process(pid)
    while process.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
        time.sleep(0.005)


def _locked(database: Path) -> bool:
    """Whether another process holds any lock on ``database`` (this one holds none: the
    connection is closed at once)."""
    with closing(sqlite3.connect(database, timeout=0, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
            return True
        conn.execute("ROLLBACK")
        return False
