"""Studies on a real PostgreSQL server that the tests share, stop and restart.

* two `ablate study` processes share one study, as two machines would, with the MLflow store
  on the same server through the README's ``postgresql://`` URI (psycopg2 installed, as
  ``ablate[postgres]`` gives, not psycopg 3);
* a server restart in the middle of a trial is waited out: the trial goes on, no retry is
  used, no epoch is trained twice, and the command ends "complete" with status 0;
* an outage longer than ``$ABLATE_STORAGE_PATIENCE`` ends the command with one line naming
  the storage and the command that continues it, which then finishes the cell in the same
  MLflow run;
* a frozen holder of the study's advisory lock is named (host, pid, database session) after
  a bounded wait.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
psutil = pytest.importorskip("psutil")
from cli_process import study_cli  # noqa: E402  (tests/ helper, not collected)
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ablate.exceptions import AblateError  # noqa: E402
from ablate.study import load_study  # noqa: E402
from ablate.study.storage import StudyLock, read_trials, resolve_storage_url  # noqa: E402
from ablate.tracking import resolve_tracking_uri  # noqa: E402
from ablate.tracking.conventions import VAL_ACC  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STUDY = """\
name: {name}
base: {{dataset: digits, img_size: 8, epochs: {epochs}, checkpoint_dir: checkpoints,
        system_metrics: false}}
grid: {grid}
"""


def _study(workdir: Path, name: str, grid: str, epochs: int) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, grid=grid, epochs=epochs))
    return path


def _trials(url: str, name: str) -> list:
    """The study's trials (none before it is created), over one connection closed after."""
    try:
        return read_trials(resolve_storage_url(url), name)
    except Exception:  # not created yet
        return []


def _wait_for_epoch(proc: subprocess.Popen, url: str, name: str, epoch: int) -> None:
    """Until a running trial has reported ``epoch`` (its curve is in the storage)."""
    storage = None  # one connection for every look, once the command has made the study
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail("the study ended too early:\n" + proc.stdout.read())
            if storage is None and _trials(url, name):
                storage = optuna.storages.RDBStorage(resolve_storage_url(url))
            trials = optuna.load_study(study_name=name, storage=storage).trials if storage else []
            if any(t.state == TrialState.RUNNING and epoch in t.intermediate_values
                   for t in trials):  # fmt: skip
                return
            time.sleep(0.2)
        pytest.fail(f"no trial reached epoch {epoch}")
    finally:
        if storage is not None:
            storage.engine.dispose()


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, VAL_ACC))


@pytest.mark.slow
def test_two_processes_share_one_study_and_mlflow_on_the_server(postgres, workdir, monkeypatch):
    import sqlalchemy

    url = resolve_storage_url(postgres.url)
    mlflow_db = f"{postgres.url.rsplit('/', 1)[1]}_mlflow"
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:  # MLflow and Optuna each need a database of their own
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {mlflow_db}"))
    engine.dispose()
    mlflow_url = f"{postgres.url.rsplit('/', 1)[0]}/{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)  # plain postgresql://, psycopg2
    path = _study(workdir, "pg_test", "{variant: [softmax, softmax_v], seed: [0, 1]}", 1)
    # Two independent commands, as on two machines: they race to create the study, its
    # tables and its MLflow parent run, then share the cells.
    procs = [study_cli(workdir, str(path), "--storage", postgres.url, threads=1) for _ in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
    ran = [int(re.search(r"(\d+) trials run now", out).group(1)) for out in outputs]
    assert sum(ran) == 4, outputs

    trials = _trials(postgres.url, "pg_test")
    plan = load_study(path)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert Counter(t.user_attrs["cell"] for t in trials) == Counter({c.key: 1 for c in plan.cells})
    client = MlflowClient(resolve_tracking_uri(mlflow_url))
    assert "+psycopg2" in client.tracking_uri or "psycopg" in sys.modules
    parent = optuna.load_study(study_name="pg_test", storage=resolve_storage_url(postgres.url))
    parent_id = parent.user_attrs["mlflow_parent_run_id"]
    parents = client.search_runs(
        [client.get_experiment_by_name("pg_test").experiment_id],
        filter_string="tags.role = 'study' and tags.study = 'pg_test'",
    )
    assert [r.info.run_id for r in parents] == [parent_id]  # created once despite the race
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.info.status == "FINISHED"
        assert _steps(client, run.info.run_id) == [0, 1]


@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")
def test_a_server_restart_mid_trial_is_waited_out(postgres, workdir):
    path = _study(workdir, "restart", "{seed: [0]}", 16)
    proc = study_cli(workdir, str(path), "--storage", postgres.url, "--quiet", threads=1)
    _wait_for_epoch(proc, postgres.url, "restart", 2)
    postgres.server.stop()  # every session ends, and the next epoch's report finds no server
    time.sleep(3)
    postgres.server.start()
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "unreachable" in out and "retrying" in out  # it said what it waited for
    assert "study 'restart': complete; 1 trials run now" in out and "Traceback" not in out
    (trial,) = _trials(postgres.url, "restart")  # no retry was used, nothing restarted
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == list(range(17))
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "resumed_from_epoch" not in run.data.tags
    assert _steps(client, run.info.run_id) == list(range(17))  # every epoch once


@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")
def test_an_outage_past_the_patience_is_one_line_naming_how_to_continue(postgres, workdir):
    path = _study(workdir, "outage", "{seed: [0]}", 4)
    env = {**os.environ, "ABLATE_STORAGE_PATIENCE": "3"}
    proc = study_cli(workdir, str(path), "base.epochs=12", "--storage", postgres.url, "--quiet",
                     env=env, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_epoch(proc, postgres.url, "outage", 2)
    postgres.server.stop()
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - started < 60  # bounded: 3 s of patience, then the way out
    assert proc.returncode == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("ablate study: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert postgres.url.split("@", 1)[1] in errors[0], errors  # 127.0.0.1:PORT/DATABASE
    assert err.count("retrying for up to 3 s") == 1  # said once, by every thread together
    resume = errors[0].split("continue with: ", 1)[1]
    assert resume.startswith(f"ablate study {path} base.epochs=12 base.quiet=true --storage ")
    assert "study 'outage': complete" not in out

    postgres.server.start()
    rerun = study_cli(workdir, *shlex.split(resume)[2:], threads=1)  # pasted as printed
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0 and "complete" in out, out
    failed, retry = _trials(postgres.url, "outage")
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    run_id = retry.user_attrs["mlflow_run_id"]
    assert failed.user_attrs["mlflow_run_id"] == run_id  # the same MLflow run continued
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert client.get_run(run_id).info.status == "FINISHED"
    assert _steps(client, run_id) == list(range(13))  # every epoch once


@pytest.mark.slow
def test_a_frozen_holder_of_the_advisory_lock_is_named_after_a_bounded_wait(postgres):
    url = resolve_storage_url(postgres.url)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, signal, sys; from ablate.study.storage import "
         "StudyLock; lock = StudyLock(sys.argv[1], 'frozen'); lock.__enter__(); print('held', "
         "flush=True); "
         "os.kill(os.getpid(), signal.SIGSTOP)", url],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        while psutil.Process(holder.pid).status() != psutil.STATUS_STOPPED:
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(AblateError) as raised:
            with StudyLock(url, "frozen", wait=2):
                pass
        assert 2 <= time.monotonic() - started < 10
        message = str(raised.value)
        who = f"held for more than 2 s by ablate on {socket.gethostname()} pid {holder.pid}"
        assert who in message
        assert "pg_terminate_backend(" in message and "\n" not in message
        with StudyLock(url, "another study", wait=2):  # other studies are not held up
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
