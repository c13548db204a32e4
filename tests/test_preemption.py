"""Preemption-safe trials (issue 17): a stop signal hands the running trial over, and the
next command resumes it in the same MLflow run from its last checkpoint.

The end-to-end tests start the real `ablate study` command in its own process group, signal
the whole group after 3 of 10 epochs (as SLURM does at preemption, or a terminal on Ctrl-C),
rerun the command and compare the resumed curve with an uninterrupted same-seed `ablate run`
(made once per test session), on real SQLite Optuna and MLflow stores. The unit tests cover
the signal plumbing (:mod:`ablate.trial.stopping`) and stale-process detection through psutil.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from cli_process import ablate_cli, study_cli  # noqa: E402  (tests/ helper, not collected)
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ablate.exceptions import Stopped  # noqa: E402
from ablate.study.storage import is_dead, open_storage, process_identity  # noqa: E402
from ablate.trial.stopping import JOB_END_ENV, StopSignals, critical, stop_reason  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 10  # the uninterrupted reference's (tests/conftest.py)

STUDY = f"""\
name: {{name}}
base:
  dataset: digits
  img_size: 8  # 0.3 s epochs on one core: the stop lands between epoch 3 and the end
  epochs: {EPOCHS}
  batch_size: 128
  checkpoint_dir: checkpoints
  system_metrics: false
grid:
  variant: [softmax]
  seed: [0]
"""


def _trials(workdir: Path, name: str) -> list:
    storage = open_storage(f"sqlite:///{workdir}/ablate-optuna.db")
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


def _curve(client: MlflowClient, run_id: str, key: str = "acc/val") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _wait_for_epochs(proc: subprocess.Popen, workdir: Path, epochs: int) -> str:
    """The trial's MLflow run id once ``epochs`` training epochs are logged."""
    client = _client(workdir)
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.1)
        if proc.poll() is not None:
            pytest.fail("the study ended before it could be stopped:\n" + proc.stdout.read())
        folder = workdir / "checkpoints"
        runs = list(folder.iterdir()) if folder.exists() else []
        if not runs:
            continue
        try:
            logged = _curve(client, runs[0].name)
        except Exception:  # tables still being created
            continue
        if len(logged) >= epochs + 1:  # epoch 0 (before training) + `epochs`
            return runs[0].name
    pytest.fail("the trial never reached its third epoch")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize(
    "signame, workers, exit_code, reason",
    [("SIGTERM", "1", 143, "preempted"), ("SIGINT", "2", 130, "user")],
)
@pytest.mark.usefixtures("existing_store")  # made by MLflow once per session
def test_stopped_study_resumes_the_same_trial_in_the_same_run(
    workdir, uninterrupted, signame, workers, exit_code, reason
):
    name = f"stop_{signame.lower()}"
    path = workdir / f"{name}.yaml"
    path.write_text(STUDY.format(name=name))
    proc = study_cli(workdir, str(path), "--workers", workers, threads=1, new_session=True)
    run_id = _wait_for_epochs(proc, workdir, 3)
    stopped_at = time.time()
    os.killpg(proc.pid, getattr(signal, signame))  # the whole process group, as SLURM does
    out, _ = proc.communicate(timeout=120)
    exit_seconds = time.time() - stopped_at
    assert proc.returncode == exit_code, out
    assert f"stopped by {signame} ({reason})" in out and "run the same command again" in out
    assert exit_seconds < 60, f"took {exit_seconds:.1f} s to stop"

    client = _client(workdir)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["stop_reason"] == reason
    before = max(step for step, _ in _curve(client, run_id))
    assert 3 <= before < EPOCHS
    (stopped,) = _trials(workdir, name)[:1]
    assert stopped.state == TrialState.FAIL
    assert stopped.system_attrs["ablate.fail_kind"] == "stopped"
    waiting = [t for t in _trials(workdir, name) if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["failed_trial"] == stopped.number

    rerun = study_cli(workdir, str(path), threads=1)
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out
    trials = _trials(workdir, name)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retry = trials[1]
    # Optuna's retry machinery names the trial it continues; the same MLflow run goes on
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert retry.user_attrs["mlflow_run_id"] == run_id
    assert "ablate.fail_kind" not in retry.system_attrs
    children = client.search_runs(
        [run.info.experiment_id], filter_string="tags.role = 'trial'"
    )
    assert [r.info.run_id for r in children] == [run_id]  # one MLflow run for the trial
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trial_state"] == "COMPLETE"
    assert "stop_reason" not in run.data.tags and "failure_reason" not in run.data.tags
    # at most the interrupted epoch was lost: training resumed after the last logged epoch
    assert int(run.data.tags["resumed_from_epoch"]) == before
    for key in ("acc/val", "loss/val", "loss/train", "optim/lr"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == sorted(set(steps)), f"{key} logged twice for an epoch"
    curve = _curve(client, run_id)
    assert [step for step, _ in curve] == list(range(EPOCHS + 1))
    assert retry.intermediate_values.keys() == set(range(EPOCHS + 1))

    for key, reference in uninterrupted.items():  # softmax, seed 0, 8 px, batch 128, 10 epochs
        assert _curve(client, run_id, key) == [tuple(point) for point in reference], key


# -- the signal plumbing ---------------------------------------------------------------------
def test_stop_reasons(monkeypatch):
    monkeypatch.delenv(JOB_END_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    assert stop_reason(signal.SIGINT) == "user"
    assert stop_reason(signal.SIGTERM) == "preempted"
    assert stop_reason(signal.SIGUSR1) == "time_limit"  # sbatch --signal=USR1@90
    now = 1_000_000.0
    monkeypatch.setenv(JOB_END_ENV, str(now + 60))
    assert stop_reason(signal.SIGTERM, now) == "time_limit"
    assert stop_reason(signal.SIGUSR2, now) == "time_limit"
    monkeypatch.setenv(JOB_END_ENV, str(now + 3600))
    assert stop_reason(signal.SIGTERM, now) == "preempted"
    assert stop_reason(signal.SIGUSR2, now) == "time_limit"  # a warning, however early
    assert stop_reason(signal.SIGINT, now) == "user"


def test_a_stop_waits_for_the_critical_section_and_a_second_signal_is_ignored():
    done = []
    with StopSignals():
        with pytest.raises(Stopped) as err:
            with critical():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # delivered here, raised only when the section ends
                os.kill(os.getpid(), signal.SIGTERM)  # ignored: the first is handled
                done.append("bookkeeping finished")
        assert done == ["bookkeeping finished"]
        assert err.value.reason == "preempted" and err.value.signal_name == "SIGTERM"
        assert err.value.exit_code == 143
    with StopSignals():  # outside a critical section the step is abandoned at once
        with pytest.raises(Stopped, match=r"stopped by SIGINT \(user\)"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


class _SignalledWhileCollected:
    """Garbage whose finaliser is where the signal handler runs (as SQLAlchemy's weakref
    callbacks were, on a worker that had just claimed a trial)."""

    def __del__(self):
        signal.raise_signal(signal.SIGUSR2)  # the handler runs inside __del__: Stopped dropped


def test_a_stop_raised_where_python_drops_exceptions_is_raised_by_the_next_check():
    from ablate.trial.stopping import check

    hook = sys.unraisablehook
    with StopSignals():
        _SignalledWhileCollected()  # collected at once: "Exception ignored in __del__"
        with pytest.raises(Stopped, match=r"stopped by SIGUSR2 \(time_limit\)"):
            check()  # the training loop calls it before every step
        check()  # raised once
    assert sys.unraisablehook is hook
    with pytest.raises(Stopped):  # in the loop: the step after the lost stop does not start
        with StopSignals():
            _SignalledWhileCollected()
            _one_training_step()


def _one_training_step():
    from ablate.config import RunConfig
    from ablate.trial.run import _build, resolve

    run = resolve(RunConfig(model="cct_2_3x2_32", dataset="digits", img_size=8, epochs=1))
    _, _, loop, _ = _build(run)
    loop.train_epoch(1)


def test_stale_processes_are_found_through_psutil():
    me = process_identity()
    assert isinstance(me["pid_start"], float)
    assert not is_dead(me)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = {**me, "pid": child.pid, "pid_start": me["pid_start"]}
    assert is_dead(gone)
    assert is_dead({**me, "pid_start": me["pid_start"] - 3600})  # the pid was reused
    assert not is_dead({**me, "pid_space": "another-machine"})  # its heartbeat decides
    assert not is_dead({**me, "pid_start": "12345"})  # recorded by an older ablate


@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")  # made by MLflow once per session
def test_run_in_a_log_file_prints_one_line_per_epoch_and_a_sigterm_ends_it_killed(workdir):
    # a fresh interpreter, as a shell starts it (the other commands here are forked)
    proc = ablate_cli(workdir, "run", "--dataset", "digits", "--img-size", "8", "--epochs", "40",
                      "--batch-size", "128", "--no-system-metrics", "--checkpoint-dir",
                      "checkpoints", threads=1, fresh=True, stderr=subprocess.PIPE)  # fmt: skip
    run_id = _wait_for_epochs(proc, workdir, 2)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "\r" not in err and "\r" not in out
    epochs = [line.split("  ")[0].split(": ")[-1] for line in err.splitlines()
              if ": epoch " in line]
    assert epochs[:2] == ["epoch 1/40", "epoch 2/40"]  # one plain line per epoch, named
    run = _client(workdir).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["stop_reason"] == "preempted"
    assert f"resume with: ablate run --resume {run_id}" in run.data.tags["failure_reason"]
