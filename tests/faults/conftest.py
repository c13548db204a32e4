"""Real faults for the tests in this folder: a small file system that fills up, a real
``mlflow server`` that the test stops, a watcher that sends a real signal at a chosen moment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FAST = dict(dataset="digits", img_size=8, batch_size=128, quiet=True, seed=0,
            system_metrics=False)  # fmt: skip


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``tiny_fs(name, size)``: a tmpfs of ``size`` (``"4m"``) mounted at ``tmp_path/name``,
    unmounted after the test; skips where this user cannot mount one."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last byte; returns the file to delete to free it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:  # nothing left to flush at close
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:  # ENOSPC: full
            pass
    return filler


@contextmanager
def signal_when(ready: Callable[[], bool], signum: int, pid: int | None = None
                ) -> Iterator[list[float]]:
    """Send ``signum`` to ``pid`` (this process) once ``ready()``, polled every 50 ms from a
    thread; yields a list that gets the time it was sent. Nothing is sent after the block,
    which runs with a no-op handler under the one the code installs (a late signal must not
    end pytest)."""
    sent: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            try:
                if ready():
                    sent.append(time.time())
                    os.kill(pid or os.getpid(), signum)
                    return
            except Exception:  # noqa: BLE001 - the store is busy or not there yet
                continue

    previous = signal.signal(signum, lambda *_: None)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        done.set()
        thread.join()
        signal.signal(signum, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 over a SQLite store in ``root``; :meth:`start`
    and :meth:`stop` it as often as a test needs (the same port and data each time)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MlflowServer":
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1", "--backend-store-uri",
             f"sqlite:///{self.root}/server.db", "--artifacts-destination",
             str(self.root / "artifacts")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "mlflow server exited"
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.25)
        pytest.fail("mlflow server did not answer in 120 s")

    def stop(self) -> None:
        """SIGKILL, the whole process group: a server that is gone, not one that says bye."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()
