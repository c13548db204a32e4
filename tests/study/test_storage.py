"""Storage URLs, the liveness of worker processes, the study lock's bounded wait for a frozen
holder (a real stopped process), and which database errors are waited out (the waiting on a
real restarting server is in test_postgres.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from cli_process import run_ablate  # tests/ helper, not collected

from ablate.exceptions import AblateError, ConfigError
from ablate.study.storage import (
    StudyLock,
    _is_transient,
    display_url,
    is_dead,
    process_identity,
    resolve_storage_url,
)

ROOT = Path(__file__).resolve().parents[2]


def test_storage_urls_default_to_a_local_sqlite_file():
    assert resolve_storage_url(None) == "sqlite:///ablate-optuna.db"
    assert resolve_storage_url("runs/a.db") == "sqlite:///runs/a.db"
    with pytest.raises(ConfigError, match="'redis://host/0' is not a supported database"):
        resolve_storage_url("redis://host/0")


def test_urls_in_messages_hide_the_password():
    shown = display_url("postgresql://ablate:s3cret@db.example.org/studies")
    assert "s3cret" not in shown and "db.example.org/studies" in shown


def test_a_finished_worker_process_is_dead_and_this_one_is_not():
    assert not is_dead(process_identity())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    identity = {**process_identity(), "pid": child.pid, "pid_start": 0.0}
    assert is_dead(identity)
    # Another machine's (or container's) process is judged by its heartbeat, not here.
    assert not is_dead({**identity, "pid_space": "another-boot/pid:[1]"})
    assert not is_dead(None)


def _frozen_holder(url: str, study: str) -> subprocess.Popen:
    """A process that takes the study lock and then stops (SIGSTOP): it never lets go."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, signal, sys; from ablate.study.storage import "
         "StudyLock; lock = StudyLock(sys.argv[1], sys.argv[2]); lock.__enter__(); "
         "print('held', flush=True); os.kill(os.getpid(), signal.SIGSTOP)", url, study],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "held"
    while psutil.Process(holder.pid).status() != psutil.STATUS_STOPPED:
        time.sleep(0.05)
    return holder


def test_a_frozen_lock_holder_is_named_after_a_bounded_wait(workdir):
    url = f"sqlite:///{workdir}/ablate-optuna.db"
    holder = _frozen_holder(url, "frozen")
    try:
        started = time.monotonic()
        with pytest.raises(AblateError) as raised:
            with StudyLock(url, "frozen", wait=1):
                pass
        assert 1 <= time.monotonic() - started < 5
        assert str(raised.value) == (
            f"study lock of 'frozen' on {url} held for more than 1 s by ablate on "
            f"{socket.gethostname()} pid {holder.pid}; if that command is stuck (stopped or "
            "hung), end it, then run this command again"
        )
    finally:
        holder.kill()
        holder.wait()
    with StudyLock(url, "frozen", wait=1):  # a killed holder lets go at once
        pass


@pytest.mark.slow
def test_a_second_study_command_gives_up_on_a_frozen_holder_in_one_line(workdir):
    path = workdir / "s.yaml"
    path.write_text("name: held\nbase: {dataset: digits, epochs: 1}\ngrid: {seed: [0]}\n")
    holder = _frozen_holder(f"sqlite:///{workdir}/ablate-optuna.db", "held")
    try:
        out = run_ablate(workdir, "study", str(path), timeout=120,
                         env={**os.environ, "ABLATE_STORAGE_PATIENCE": "2"})  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and f"pid {holder.pid}" in out.stderr, out.stderr
    assert out.stderr.startswith("ablate study: error: study lock of 'held'")


def test_only_lost_connections_and_restarts_are_waited_out(workdir):
    import sqlalchemy
    from optuna.exceptions import StorageInternalError

    url = f"sqlite:///{workdir}/none/x.db"  # a directory that does not exist
    with pytest.raises(sqlalchemy.exc.OperationalError) as unable:
        sqlalchemy.create_engine(url).connect()
    assert not _is_transient(unable.value)  # a wrong path is not worth waiting for
    try:  # how Optuna reports a restarting server
        try:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(
                "FATAL:  the database system is starting up"))
        except sqlalchemy.exc.OperationalError as err:
            raise StorageInternalError("invalid data in the commit") from err
    except StorageInternalError as err:
        assert _is_transient(err)
