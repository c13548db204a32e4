"""Study plans from small YAML texts, a study prepared in a real SQLite storage + store, and
a real PostgreSQL server that a test can stop and start (the Debian ``postgresql`` package's
binaries, ``/usr/lib/postgresql/*/bin``; skipped with the reason where none can start)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from ablate.study.common import RunSettings
from ablate.study.spec import StudyPlan, load_study

GRID = """\
name: {name}
base: {{dataset: digits, epochs: 1, img_size: 8, checkpoint_dir: checkpoints}}
grid:
  variant: [softmax, softmax_v]
  seed: [0, 1]
max_retries: 1
"""

SEARCH = """\
name: {name}
base: {{dataset: digits, epochs: 3}}
search_space:
  lr: {{type: log_float, low: 1.0e-4, high: 1.0e-2}}
  warmup_epochs: {{type: float, low: 0, high: 3, step: 0.5}}
  batch_size: {{type: int, low: 32, high: 128, step: 32}}
  variant: {{type: categorical, choices: [softmax, softmax_v]}}
n_trials: 4
seed: 7
pruner: {pruner}
"""


@pytest.fixture
def make_plan(tmp_path: Path):
    """``make_plan(text)``: the StudyPlan of a study file with that text."""

    def make(text: str, name: str = "s") -> StudyPlan:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return load_study(path)

    return make


@pytest.fixture
def search_plan(make_plan):
    """``search_plan(pruner)``: a 4-trial TPE search over lr, warmup, batch size, variant."""
    return lambda pruner="none": make_plan(SEARCH.format(name="search", pruner=pruner), "search")


@pytest.fixture
def grid_plan(make_plan) -> StudyPlan:
    return make_plan(GRID.format(name="grid"), "grid")


@pytest.fixture
def settings(workdir: Path) -> RunSettings:
    return RunSettings(
        storage_url=f"sqlite:///{workdir}/ablate-optuna.db",
        tracking_uri=f"sqlite:///{workdir}/mlflow.db",
        poll_interval=0.05,
    )


# -- a real PostgreSQL server, started (and restarted) by the test ----------------------------
PG_INSTALL_HINT = "install a server with: apt-get install -y postgresql"


def _pg_bindir() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        found = re.search(r"postgresql/([\d.]+)/", path)
        return tuple(int(p) for p in found.group(1).split(".")) if found else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


class Postgres:
    """A throwaway server on 127.0.0.1 (as the ``postgres`` user when the tests run as root).

    Attributes:
        url: its database for the ``ablate`` user, as the user writes it (``postgresql://``).
    """

    def __init__(self, bindir: Path, tmp: Path, run_as: list[str]):
        self.bindir, self.tmp, self.run_as = bindir, tmp, run_as
        self.data, self.log = tmp / "data", tmp / "server.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://ablate@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, *args], capture_output=True, text=True, timeout=120)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        # TCP on loopback only; fsync off (throwaway)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.tmp} -F"
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                         "-o", options, *args)

    def start(self) -> None:
        done = self.pg_ctl("-w", "-t", "60", "start")
        assert done.returncode == 0, _tail(done.stderr + self.log.read_text())

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session ("terminating connection due to administrator
        command"), as a restart or a failover does."""
        assert self.pg_ctl("-m", mode, "-w", "stop").returncode == 0


@pytest.fixture
def postgres():
    """A PostgreSQL server of its own; always stopped and removed afterwards."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)"
    )
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL server binaries (initdb, pg_ctl) found; {PG_INSTALL_HINT}")
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
    server = Postgres(bindir, tmp, run_as)
    try:
        init = server._run(str(bindir / "initdb"), "-D", str(server.data), "-U", "ablate",
                           "--auth=trust", "-E", "UTF8")
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {_tail(init.stderr or init.stdout)}")
        start = server.pg_ctl("-w", "-t", "60", "start")
        if start.returncode != 0:
            log = server.log.read_text() if server.log.exists() else ""
            pytest.skip(f"PostgreSQL did not start: {_tail(start.stderr + log)}")
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)
