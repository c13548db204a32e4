"""One study, two `ablate study` processes, a real PostgreSQL server as the Optuna storage.

The server is started from the Debian ``postgresql`` package's binaries
(``/usr/lib/postgresql/*/bin``) in a temporary directory, listening on 127.0.0.1 only, as
the ``postgres`` user when the tests run as root. The test is skipped, with the reason,
where no server can be started (install one with ``apt-get install -y postgresql``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from study_cli import study_cli  # noqa: E402  (tests/ helper, not collected)

from ablate.study import load_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INSTALL_HINT = "install a server with: apt-get install -y postgresql"


def _pg_bindir() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        found = re.search(r"postgresql/([\d.]+)/", path)
        return tuple(int(p) for p in found.group(1).split(".")) if found else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1; always stopped and removed afterwards."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)"
    )
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL server binaries (initdb, pg_ctl) found; {INSTALL_HINT}")
    run_as: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip("running as root and `runuser` is missing, so the server cannot drop root")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        run_as = [runuser, "-u", "postgres", "--"]
    os.chmod(tmp, 0o700)
    data, log, port = tmp / "data", tmp / "server.log", _free_port()

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(run_as + list(args), capture_output=True, text=True, timeout=timeout)

    try:
        init = pg(
            str(bindir / "initdb"), "-D", str(data), "-U", "ablate", "--auth=trust", "-E", "UTF8"
        )
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {_tail(init.stderr or init.stdout)}")
        options = (
            f"-h 127.0.0.1 -p {port} -k {tmp} -F"  # TCP on loopback only; fsync off (throwaway)
        )
        start = pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        if start.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            pytest.skip(f"PostgreSQL did not start: {_tail(start.stderr + server_log)}")
        yield f"postgresql+psycopg2://ablate@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            pg(
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "immediate",
                "-w",
                "stop",
                timeout=60,
            )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_two_processes_share_one_postgres_study(postgres_url, workdir):
    path = workdir / "pg.yaml"
    path.write_text(
        "name: pg_test\nbase: {dataset: digits, epochs: 1, checkpoint_dir: checkpoints}\n"
        "grid:\n  variant: [softmax, softmax_v]\n  seed: [0, 1]\n"
    )
    # Two independent commands, as on two machines: they race to create the study, its
    # tables and its MLflow parent run, then share the cells.
    procs = [study_cli(workdir, str(path), "--storage", postgres_url, threads=1) for _ in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
    ran = [int(re.search(r"(\d+) trials run now", out).group(1)) for out in outputs]
    assert sum(ran) == 4, outputs

    study = optuna.load_study(study_name="pg_test", storage=postgres_url)
    trials = study.get_trials()
    plan = load_study(path)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert Counter(t.user_attrs["cell"] for t in trials) == Counter({c.key: 1 for c in plan.cells})

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    parent = study.user_attrs["mlflow_parent_run_id"]
    parents = client.search_runs(
        [client.get_experiment_by_name("pg_test").experiment_id],
        filter_string="tags.role = 'study' and tags.study = 'pg_test'",
    )
    assert [r.info.run_id for r in parents] == [parent]  # created once despite the race
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent and run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [0, 1]
