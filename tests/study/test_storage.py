"""Storage URLs and the liveness of worker processes (the parts of storage.py a worker
relies on to reap dead trials; locking is covered by the multi-worker study tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ablate.exceptions import ConfigError
from ablate.study.storage import display_url, is_dead, process_identity, resolve_storage_url


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
