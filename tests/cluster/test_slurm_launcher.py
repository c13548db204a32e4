"""`ablate study --launcher slurm` on a real one-node SLURM cluster (tests/cluster/slurm.py).

Every test runs the command a user runs on a login node, against a real PostgreSQL study
storage, and stops tasks the way SLURM does: ``scontrol requeue`` and ``scancel`` (SIGTERM),
``scancel --signal=USR2`` (the time-limit warning submitit asks for). Tiny trials (CCT-2 on
8x8 digits) keep each test under a minute.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("submitit")
optuna = pytest.importorskip("optuna")
from cli_process import study_cli  # noqa: E402  (tests/ helper, not collected)
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ablate.study.storage import read_trials  # noqa: E402
from ablate.tracking import conventions as cv  # noqa: E402

pytestmark = pytest.mark.slow

STUDY = """\
name: {name}
base: {{model: cct_2_3x2_32, dataset: digits, img_size: {img_size}, epochs: {epochs},
        batch_size: 128, checkpoint_dir: checkpoints, system_metrics: false}}
grid:
  seed: {seeds}
"""


def _study(workdir: Path, name: str, cells: int, epochs: int, img_size: int = 8) -> Path:
    path = workdir / f"{name}.yaml"
    text = STUDY.format(name=name, epochs=epochs, img_size=img_size, seeds=list(range(cells)))
    path.write_text(text)
    return path


def _trials(storage: Any, name: str) -> list:
    """The study's trials (none before it is created). A URL opens one connection and closes
    it: a storage per look, left to the garbage collector, ran the session's server out of
    connections ("too many clients")."""
    try:
        if isinstance(storage, str):
            return read_trials(storage, name)
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:  # not created yet
        return []


def _running_trials(storage: str, name: str, epoch: int, proc: Any, count: int = 1,
                    exclude: frozenset = frozenset()) -> list:  # fmt: skip
    """The first ``count`` trials RUNNING at ``epoch`` or later at the same time (its epoch 0
    is before training), other than the trial numbers in ``exclude``."""
    opened = None  # one connection for every look, once the command has made the study
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if opened is None and _trials(storage, name):
                opened = optuna.storages.RDBStorage(storage)
            running = [t for t in (_trials(opened, name) if opened else [])
                       if t.state == TrialState.RUNNING and t.number not in exclude
                       and max(t.intermediate_values, default=-1) >= epoch]  # fmt: skip
            if len(running) >= count:
                return running[:count]
            time.sleep(0.2)
    finally:
        if opened is not None:
            opened.engine.dispose()
    pytest.fail(f"no {count} trial(s) reached epoch {epoch} together:\n"
                f"{proc.communicate()[0] if proc.poll() else ''}")  # fmt: skip


def _slurm_job_of(trial, whole_array: bool = False) -> str:
    """The SLURM id of the array task running ``trial`` (``JOB_TASK``; ``whole_array``: the
    array's ``JOB``), read from its worker's environment. A task's own SLURM_JOB_ID would
    not do: the first task's equals the array's, which names every task."""
    pid = trial.system_attrs["ablate.worker"]["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    env = dict(v.decode().split("=", 1) for v in environ if b"=" in v)
    if "SLURM_ARRAY_JOB_ID" not in env:  # an array of one is submitted as a plain job
        return env["SLURM_JOB_ID"]
    array = env["SLURM_ARRAY_JOB_ID"]
    return array if whole_array else f"{array}_{env['SLURM_ARRAY_TASK_ID']}"


def _launch(workdir: Path, path: Path, storage: str, *flags: str) -> subprocess.Popen:
    return study_cli(workdir, str(path), "--storage", storage, "--launcher", "slurm", "--wait",
                     *flags, threads=1)  # fmt: skip


def _logs(workdir: Path, name: str) -> str:
    logs = sorted((workdir / "ablate-logs" / name).glob("*/*_log.*"))  # every task and requeue
    return "".join(path.read_text() for path in logs)


def _assert_every_cell_once(workdir: Path, storage: str, name: str, cells: int, epochs: int):
    """One COMPLETE trial per cell; one FINISHED MLflow run per cell with each epoch once."""
    trials = _trials(storage, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert Counter(t.user_attrs["cell"] for t in complete) == Counter(
        {cell: 1 for cell in {t.user_attrs["cell"] for t in trials}}
    )
    assert len(complete) == cells, [(t.number, t.state.name) for t in trials]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name(name).experiment_id], "tags.role = 'trial'"
    )
    assert sorted(r.info.run_id for r in runs) == sorted(t.user_attrs["mlflow_run_id"]
                                                         for t in complete)  # fmt: skip
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, cv.VAL_ACC)]
        assert sorted(steps) == list(range(epochs + 1)), (run.info.run_name, steps)
    return trials, client


def test_dry_run_script_is_accepted_by_sbatch(slurm, workdir):
    path = _study(workdir, "script", cells=2, epochs=1)
    proc = study_cli(workdir, str(path), "--launcher", "slurm", "--dry-run", "--array", "2",
                     "--storage", "postgresql://ablate@db.cluster/ablate", "--requeue",
                     "--slurm-time", "5", "--slurm-signal-offset", "120")  # fmt: skip
    script, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, script
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --signal=USR2@120" in script and "#SBATCH --time=5" in script
    (workdir / "job.sh").write_text(script)
    test = slurm.run("sbatch", "--test-only", str(workdir / "job.sh"))
    assert test.returncode == 0 and "to start at" in test.stderr, test.stderr
    assert not slurm.run("squeue", "-h").stdout.strip()  # --test-only submits nothing


@pytest.mark.usefixtures("existing_store")
def test_array_of_two_runs_every_cell_once_and_logs_every_epoch(slurm, workdir, study_storage):
    cells, epochs = 4, 2
    path = _study(workdir, "array", cells, epochs)
    proc = _launch(workdir, path, study_storage, "--array", "2")
    # A time-limit warning while a task that has finished exits must not make it FAILED.
    warned, deadline = set(), time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        for log in (workdir / "ablate-logs" / "array").glob("*/*_log.err"):
            task = log.parent.name
            if task not in warned and f"array task {task}: done" in log.read_text():
                warned.add(task)
                for _ in range(100):  # until the task is gone
                    if slurm.run("scancel", "--signal=USR2", task).returncode != 0:
                        break
                    time.sleep(0.05)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "study 'array': complete; 4 trials run now" in out
    assert "sacct" not in out  # the queue is followed with squeue
    trials, _ = _assert_every_cell_once(workdir, study_storage, "array", cells, epochs)
    array = re.search(r"SLURM job array: (\d+)_0, \1_1", out).group(1)
    accounting = slurm.run("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array).stdout
    assert sorted(accounting.split()) == [f"{array}_0|COMPLETED", f"{array}_1|COMPLETED"]

    logs = _logs(workdir, "array")
    for task in ("0", "1"):
        assert f"ablate study: array task {array}_{task} of study 'array'" in logs
    for t in trials:  # each epoch's line names its trial
        for epoch in range(1, epochs + 1):
            name, progress = f"array#{t.number} ", f"epoch {epoch}/{epochs}"
            lines = [line for line in logs.splitlines() if name in line and progress in line]
            assert len(lines) == 1, (t.number, epoch, lines)


# the two ways SLURM stops a task that resumes later: (command, the trial's stop reason)
STOPS = {"scontrol-requeue": (["scontrol", "requeue"], "preempted"),
         "usr2-warning": (["scancel", "--signal=USR2"], "time_limit")}  # fmt: skip


@pytest.mark.usefixtures("existing_store")
def test_tasks_stopped_mid_trial_are_requeued_and_resume_the_same_runs(
    slurm, workdir, study_storage
):
    """Each task of the array is stopped one way (STOPS) while its trial trains: both are
    requeued, and each trial resumes in its MLflow run."""
    cells, epochs = 2, 10
    path = _study(workdir, "requeue", cells, epochs)
    proc = _launch(workdir, path, study_storage, "--array", "2", "--requeue")
    victims, jobs = [], []
    for stop, _ in STOPS.values():  # each task as soon as its trial is past epoch 2
        taken = frozenset(v.number for v in victims)
        (victim,) = _running_trials(study_storage, "requeue", 2, proc, exclude=taken)
        victims.append(victim)
        jobs.append(_slurm_job_of(victim))
        stopped = slurm.run(*stop, jobs[-1])
        assert stopped.returncode == 0, stopped.stderr
    assert jobs[0] != jobs[1]  # two tasks, one stopped each way
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "study 'requeue': complete; 2 trials run now" in out

    trials, client = _assert_every_cell_once(workdir, study_storage, "requeue", cells, epochs)
    for (how, (_, reason)), victim, job in zip(STOPS.items(), victims, jobs):
        handed = trials[victim.number]
        assert handed.state == TrialState.FAIL and reason in handed.user_attrs["error"], how
        retry = next(t for t in trials if victim.number in t.system_attrs.get("retry_history",
                                                                              []))  # fmt: skip
        assert retry.state == TrialState.COMPLETE, how
        run_id = victim.user_attrs["mlflow_run_id"]
        assert retry.user_attrs["mlflow_run_id"] == run_id, how  # the same MLflow run, resumed
        assert int(client.get_run(run_id).data.tags["resumed_from_epoch"]) >= 2, how
        accounting = slurm.run("sacct", "-n", "-P", "-X", "-D", "-o", "State", "-j", job).stdout
        assert accounting.split() == ["REQUEUED", "COMPLETED"], how


@pytest.mark.usefixtures("existing_store")
def test_wait_reports_a_cancelled_array_at_once(slurm, workdir, study_storage):
    path = _study(workdir, "cancel", cells=2, epochs=10)
    proc = _launch(workdir, path, study_storage, "--array", "2", "--requeue")
    (victim,) = _running_trials(study_storage, "cancel", 1, proc)
    cancelled = time.monotonic()
    assert slurm.run("scancel", _slurm_job_of(victim, whole_array=True)).returncode == 0
    out, _ = proc.communicate(timeout=120)
    waited = time.monotonic() - cancelled
    assert proc.returncode == 2, out
    assert waited < 30, f"--wait took {waited:.0f} s to notice the cancellation"
    assert "study 'cancel':" in out and "study 'cancel': complete" not in out
    assert re.search(r"error: array task \d+_\d stopped by SIGTERM \(preempted\); its trial was "
                     r"handed over", out), out  # fmt: skip
    trials = _trials(study_storage, "cancel")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[victim.number].state == TrialState.FAIL  # handed over: a retry waits
    assert any(t.state == TrialState.WAITING for t in trials)


@pytest.mark.usefixtures("existing_store")
def test_time_limit_warning_before_the_first_epoch_does_not_requeue(slurm, workdir, study_storage):
    # 32x32 images: an epoch takes seconds, so the warning surely lands before the first ends
    # (at 8x8 a loaded machine can finish it between the look and the scancel)
    path = _study(workdir, "early", cells=1, epochs=3, img_size=32)
    proc = _launch(workdir, path, study_storage, "--requeue")
    (victim,) = _running_trials(study_storage, "early", -1, proc)  # claimed, setting up
    job = _slurm_job_of(victim)
    assert slurm.run("scancel", "--signal=USR2", job).returncode == 0
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "before finishing one epoch; not requeued" in out and "raise --slurm-time" in out
    accounting = slurm.run("sacct", "-n", "-P", "-X", "-D", "-o", "State", "-j", job).stdout
    assert accounting.split() == ["COMPLETED"]  # the task ended; no requeue
    trials = _trials(study_storage, "early")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert "time_limit" in trials[0].user_attrs["error"]
