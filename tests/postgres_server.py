"""A throwaway PostgreSQL server on 127.0.0.1, from the Debian ``postgresql`` package's binaries.

Started in a temporary directory (as the ``postgres`` user when the tests run as root, since
the server refuses root), fsync off, listening on loopback only. One server serves a test
session (``postgres_server`` in tests/conftest.py): :meth:`PostgresServer.database` gives
each test a fresh database on it, and a test may :meth:`~PostgresServer.stop` and
:meth:`~PostgresServer.start` it again, as a restart or a failover does.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "Database", "ServerUnavailable", "INSTALL_HINT"]

INSTALL_HINT = "install a server with: apt-get install -y postgresql"


class ServerUnavailable(RuntimeError):
    """No server can be started here; the message says why."""


def _bindir() -> Path | None:
    def version(path: str) -> tuple[int, ...]:
        found = re.search(r"postgresql/([\d.]+)/", path)
        return tuple(int(p) for p in found.group(1).split(".")) if found else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


class PostgresServer:
    """``with PostgresServer() as server: url = server.database("name")``.

    Attributes:
        port: the loopback port it listens on (the same after a restart).
    """

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = _free_port()
        self.run_as: list[str] = []

    def __enter__(self) -> "PostgresServer":
        try:
            self._init()
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [*self.run_as, str(self.bindir / tool), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def _pg_ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # TCP on loopback only; fsync off (throwaway data)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F"
        return self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                        *args, timeout=timeout)  # fmt: skip

    def _init(self) -> None:
        if self.bindir is None or not (self.bindir / "pg_ctl").exists():
            raise ServerUnavailable(f"no server binaries (initdb, pg_ctl); {INSTALL_HINT}")
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable("running as root and there is no 'postgres' user to run "
                                        f"the server as; {INSTALL_HINT}") from None  # fmt: skip
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerUnavailable("running as root and `runuser` is missing, so the "
                                        "server cannot drop root")  # fmt: skip
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.run_as = [runuser, "-u", "postgres", "--"]
        self.root.chmod(0o700)
        init = self._pg("initdb", "-D", str(self.data), "-U", "ablate", "--auth=trust", "-E",
                        "UTF8")  # fmt: skip
        if init.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {_tail(init.stderr or init.stdout)}")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def start(self) -> None:
        """Start it (again): the same data, the same port."""
        done = self._pg_ctl("-w", "-t", "60", "start")
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise ServerUnavailable(f"the server did not start: {_tail(done.stderr + log)}")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session ("terminating connection due to administrator
        command"), as a restart or a failover does."""
        done = self._pg_ctl("-m", mode, "-w", "stop", timeout=60)
        assert done.returncode == 0, _tail(done.stderr)

    def database(self, name: str) -> str:
        """A new, empty database ``name``; its URL as a user writes it (``postgresql://``)."""
        made = self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "ablate", name)
        if made.returncode != 0:
            raise ServerUnavailable(f"createdb {name} failed: {_tail(made.stderr)}")
        return f"postgresql://ablate@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        """Stop it at once and delete its directory."""
        if self.running:
            self._pg_ctl("-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Database:
    """One test's database on the session's server."""

    server: PostgresServer
    url: str  # postgresql://ablate@127.0.0.1:PORT/NAME, as a user writes it

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy and Optuna, with psycopg2 named (SQLAlchemy's default for
        ``postgresql://`` is psycopg 3, which the test extra does not install)."""
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)
