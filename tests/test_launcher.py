"""`ablate study FILE --launcher slurm|local` (issue 17): job arrays through submitit.

Here: the SLURM job script and the flags' checks, and the local executor, which runs the
very same array tasks as processes on this machine against real SQLite Optuna and MLflow
stores: every cell finishes exactly once, and a task stopped by submitit's time-limit signal
is requeued through submitit's checkpoint hook and resumes its trial. The same command on a
real SLURM cluster: tests/cluster/test_slurm_launcher.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("submitit")
optuna = pytest.importorskip("optuna")
from cli_process import study_cli  # noqa: E402  (tests/ helper, not collected)
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ablate.cli import main  # noqa: E402
from ablate.exceptions import ConfigError  # noqa: E402
from ablate.study.launcher import parse_slurm_time  # noqa: E402
from ablate.study.storage import open_storage  # noqa: E402
from ablate.tracking import conventions as cv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SERVER = "postgresql://ablate@db.cluster/ablate"  # never contacted: dry runs only

GRID = """\
name: {name}
base:
  dataset: digits
  img_size: 8
  epochs: {epochs}
  batch_size: 128
  checkpoint_dir: checkpoints
  system_metrics: false
grid:
{grid}
"""


def _study(workdir: Path, name: str, grid: str, epochs: int = 1) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(GRID.format(name=name, grid=grid, epochs=epochs))
    return path


def _trials(workdir: Path, name: str) -> list:
    storage = open_storage(f"sqlite:///{workdir}/ablate-optuna.db")
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    except KeyError:
        return []
    finally:
        storage.engine.dispose()


# -- the SLURM job script --------------------------------------------------------------------
def test_slurm_dry_run_prints_the_array_job_script(workdir, capsys):
    path = _study(workdir, "cluster", "  seed: [0, 1, 2]")
    code = main(
        ["study", str(path), "--launcher", "slurm", "--dry-run", "--storage", SERVER,
         "--array", "4", "--array-parallelism", "2", "--slurm-time", "1-02:30:00",
         "--slurm-partition", "gpu", "--slurm-gpus-per-task", "1", "--slurm-cpus-per-task",
         "8", "--slurm-mem", "32G", "--slurm-account", "lab", "--slurm-qos", "normal",
         "--slurm-extra", "constraint=a100", "--slurm-extra", "exclusive", "--requeue",
         "--slurm-signal-offset", "300", "--log-dir", "logs"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("#!/bin/bash\n")  # sbatch reads a script only from its #! line
    lines = set(out.splitlines())
    for line in (
        "#SBATCH --array=0-3%2",  # 4 tasks, at most 2 at once
        "#SBATCH --time=1590",  # minutes
        "#SBATCH --partition=gpu",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@300",  # the time-limit warning that triggers the requeue
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --account=lab",
        "#SBATCH --qos=normal",
        "#SBATCH --constraint=a100",
        "#SBATCH --exclusive",
        "#SBATCH --job-name=ablate-cluster",
    ):
        assert line in lines, f"{line!r} missing from:\n{out}"
    assert f"{workdir}/logs/%A_%a/%A_%a_0_log.out" in out
    assert "-m submitit.core._submit" in out and "nothing submitted" in out
    assert not (workdir / "ablate-optuna.db").exists()  # nothing was created


def test_slurm_without_requeue_has_no_requeue_line(workdir, capsys):
    path = _study(workdir, "plain", "  seed: [0]")
    assert main(["study", str(path), "--launcher", "slurm", "--dry-run", "--storage", SERVER]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --requeue" not in out and "#SBATCH --time=60" in out
    assert "#SBATCH --signal=USR2@90" in out
    assert "#SBATCH --array=0-0%1" in out


def test_sqlite_storage_is_refused_for_a_slurm_launch(workdir, capsys):
    path = _study(workdir, "nfs", "  seed: [0]")
    assert main(["study", str(path), "--launcher", "slurm", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "SQLite" in err and "PostgreSQL or MySQL" in err and "--storage postgresql://" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--array", "0"], "--array: must be >= 1, got 0"),
        (["--slurm-time", "two hours"], "--slurm-time: expected minutes, HH:MM:SS or D-HH:MM"),
        (["--slurm-mem", "lots"], "--slurm-mem: expected a size like 16G"),
        (["--slurm-extra", "bad key=1"], "--slurm-extra: expected KEY=VALUE"),
        (["--workers", "2"], "--workers: with --launcher each array task runs one worker"),
        (["--slurm-signal-offset", "0"], "--slurm-signal-offset: must be >= 1, got 0"),
        (
            ["--slurm-time", "2", "--slurm-signal-offset", "120"],
            "--slurm-signal-offset: 120 s leaves no time before the warning within the 2-minute",
        ),
    ],
)
def test_bad_launcher_flags_are_one_line_errors(workdir, capsys, flags, message):
    path = _study(workdir, "bad", "  seed: [0]")
    argv = ["study", str(path), "--launcher", "slurm", "--dry-run", "--storage", SERVER, *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize(
    "flags", [["--array", "4"], ["--slurm-extra", "exclusive"], ["--requeue"], ["--wait"]]
)
def test_launcher_flags_without_a_launcher_are_refused(workdir, capsys, flags):
    path = _study(workdir, "nolauncher", "  seed: [0]")
    assert main(["study", str(path), *flags, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{flags[0]}: only with --launcher slurm|local")


def test_slurm_time_formats():
    assert parse_slurm_time("90") == 90
    assert parse_slurm_time("30:00") == 30
    assert parse_slurm_time("30:01") == 31  # SLURM rounds seconds up
    assert parse_slurm_time("2:00:00") == 120
    assert parse_slurm_time("1-0") == 1440
    assert parse_slurm_time("1-02:30") == 1590
    with pytest.raises(ConfigError, match="at least one minute"):
        parse_slurm_time("0")


# -- the local executor: the same array tasks, on this machine ---------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")
def test_local_array_of_two_runs_every_cell_exactly_once(workdir):
    grid = "  variant: [softmax, softmax_v]\n  seed: [0, 1]"
    path = _study(workdir, "array4", grid)
    proc = study_cli(workdir, str(path), "--launcher", "local", "--array", "2", "--wait",
                     threads=1)  # fmt: skip
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "submitted 2 array task(s) of study 'array4'" in out
    assert "study 'array4': complete; 4 trials run now" in out  # the usual summary
    trials = _trials(workdir, "array4")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert Counter(t.user_attrs["cell"] for t in trials) == Counter(
        {key: 1 for key in {t.user_attrs["cell"] for t in trials}}
    )
    assert len({t.user_attrs["cell"] for t in trials}) == 4
    assert len({t.system_attrs["ablate.worker"]["pid"] for t in trials}) == 2  # both tasks
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.role = 'trial'"
    )
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 4
    assert list((workdir / "ablate-logs" / "array4").glob("*/*_log.out"))

    status = study_cli(workdir, str(path), "--status")
    out, _ = status.communicate(timeout=120)
    assert status.returncode == 0, out
    assert "4/4 finished (4 COMPLETE); complete" in out


def _running_trial(workdir: Path, name: str, epochs: int, deadline: float):
    storage = None  # one connection for every look, once the task has made the study
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                if storage is None and _trials(workdir, name):
                    storage = open_storage(f"sqlite:///{workdir}/ablate-optuna.db")
                study = optuna.load_study(study_name=name, storage=storage) if storage else None
                trials = study.trials if study else []
            except Exception:  # tables being created
                continue
            for t in trials:
                if t.state == TrialState.RUNNING and (t.last_step or 0) >= epochs:
                    return t
        pytest.fail("no trial reached its third epoch")
    finally:
        if storage is not None:
            storage.engine.dispose()


@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")
def test_time_limit_signal_requeues_the_task_through_submitit_and_resumes(workdir):
    path = _study(workdir, "requeue", "  seed: [0]", epochs=12)
    log = workdir / "launch.log"
    with open(log, "w") as handle:  # not a pipe: the local jobs keep the command's stdout
        proc = study_cli(workdir, str(path), "--launcher", "local", "--requeue", threads=1,
                         stdout=handle)  # fmt: skip
        assert proc.wait(timeout=300) == 0, log.read_text()  # returns once submitted
    out = log.read_text()
    assert "submitted 1 array task(s)" in out and "--status" in out
    assert "optuna-dashboard sqlite:///ablate-optuna.db" in out and "mlflow ui" in out

    deadline = time.time() + 600
    victim = _running_trial(workdir, "requeue", 3, deadline)
    # the warning SLURM sends --signal=USR2@90 before the time limit (submitit's signal)
    os.kill(victim.system_attrs["ablate.worker"]["pid"], signal.SIGUSR2)
    while time.time() < deadline:
        trials = _trials(workdir, "requeue")
        if any(t.state == TrialState.COMPLETE for t in trials):
            break
        time.sleep(0.2)
    trials = _trials(workdir, "requeue")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"], trials
    assert trials[0].system_attrs["ablate.fail_kind"] == "stopped"
    assert "stopped by SIGUSR2 (time_limit)" in trials[0].user_attrs["error"]
    # requeued by submitit: the restarted task (a new process) resumed the trial
    assert (
        trials[1].system_attrs["ablate.worker"]["pid"]
        != trials[0].system_attrs["ablate.worker"]["pid"]
    )
    run_id = trials[0].user_attrs["mlflow_run_id"]
    assert trials[1].user_attrs["mlflow_run_id"] == run_id
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["resumed_from_epoch"]) >= 3
    steps = [m.step for m in client.get_metric_history(run_id, cv.VAL_ACC)]
    assert sorted(steps) == list(range(13))
    logs = "".join(p.read_text() for p in (workdir / "ablate-logs" / "requeue").glob("*/*_log.*"))
    assert "Requeued job" in logs
