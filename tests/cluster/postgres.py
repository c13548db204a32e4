"""A throwaway PostgreSQL server on 127.0.0.1, from the Debian ``postgresql`` package's binaries.

Started in a temporary directory (as the ``postgres`` user when the tests run as root, since
the server refuses root), fsync off, listening on loopback only; :meth:`database` gives each
test a fresh database on it, so one server serves a whole session.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from cluster.slurm import free_port

__all__ = ["PostgresServer", "ServerUnavailable", "INSTALL_HINT"]

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


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


class PostgresServer:
    """``with PostgresServer() as server: url = server.database("name")``."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
        self.port = free_port()
        self.run_as: list[str] = []

    def __enter__(self) -> "PostgresServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [*self.run_as, str(self.bindir / tool), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def start(self) -> None:
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
        data, log = self.root / "data", self.root / "server.log"
        init = self._pg("initdb", "-D", str(data), "-U", "ablate", "--auth=trust", "-E", "UTF8")
        if init.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {_tail(init.stderr or init.stdout)}")
        # TCP on loopback only; fsync off (throwaway data)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F"
        start = self._pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60",
                         "-o", options, "start")  # fmt: skip
        if start.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise ServerUnavailable(
                f"the server did not start: {_tail(start.stderr + server_log)}"
            )

    def database(self, name: str) -> str:
        """A new, empty database ``name``; its SQLAlchemy URL."""
        made = self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "ablate", name)
        if made.returncode != 0:
            raise ServerUnavailable(f"createdb {name} failed: {_tail(made.stderr)}")
        return f"postgresql+psycopg2://ablate@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
