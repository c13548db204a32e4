"""A one-node SLURM cluster in a temporary directory: munged, MariaDB, slurmdbd, slurmctld, slurmd.

Started from Debian's packages (``slurm-wlm``, ``slurmdbd``, ``munge``, ``mariadb-server``)
as root, without systemd, every daemon in the foreground as a child of the test process, on
free loopback ports, with its config, state, logs and sockets under one temporary directory:
nothing in ``/etc`` or ``/var`` is read or written. The SLURM commands (``sbatch``,
``sacct``, ...) find this cluster through ``SLURM_CONF``. ``proctrack/linuxproc`` and
``task/none`` need no cgroups, so the cluster also starts inside a container; slurmdbd
stores its accounting in MariaDB (the only storage slurmdbd 22.05 supports), so ``sacct``
answers as on a real cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["SlurmCluster", "ClusterUnavailable", "INSTALL_HINT"]

INSTALL_HINT = "apt-get install -y slurm-wlm slurmdbd munge mariadb-server"
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
START_TIMEOUT_S = 60.0
REQUEUE_DELAY_S = 5  # SLURM's least
DB_USER, DB_PASSWORD = "slurm", "ablate-test"


class ClusterUnavailable(RuntimeError):
    """No cluster can be started here; the message says why (and the log that tells more)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


class SlurmCluster:
    """One node (this machine, every core) in one partition ``debug``, accounting on.

    Use as a context manager; ``env`` is what a SLURM command needs to reach the cluster.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ablate-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.logs = self.root / "log"
        self._procs: list[tuple[str, subprocess.Popen]] = []

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "SlurmCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        missing = [name for name in DAEMONS if shutil.which(name) is None]
        if missing:
            raise ClusterUnavailable(f"{', '.join(missing)} not found; {INSTALL_HINT}")
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd and munged needs root")
        started = time.monotonic()
        self.root.chmod(0o755)  # munged wants its socket's folders searchable by all
        for sub in ("log", "munge", "db", "state", "spool"):
            (self.root / sub).mkdir(mode=0o755)
        self._start_munge()
        db_port = self._start_mariadb()
        dbd_port = self._start_slurmdbd(db_port)
        self._write_slurm_conf(dbd_port)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait("slurmctld answers", lambda: "UP" in self.run("scontrol", "ping").stdout)
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait("the node is idle", lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip()
                   == "idle")  # fmt: skip
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        """Stop every daemon (newest first), then remove the directory."""
        if self._procs and shutil.which("scancel"):  # no job outlives the cluster
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env,
                           capture_output=True, timeout=30)  # fmt: skip
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        self._procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the SLURM commands ----------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM command against this cluster (never raises for its exit status)."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)

    # -- the daemons -----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.out", "wb")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)  # fmt: skip
        log.close()
        self._procs.append((name, proc))
        return proc

    def _wait(self, what: str, ready, timeout: float = START_TIMEOUT_S) -> None:
        """Poll ``ready()`` until it holds; a daemon that exits or a timeout is one line."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    logs = f"{_tail(self.logs / f'{name}.log')} {_tail(self.logs / f'{name}.out')}"
                    raise ClusterUnavailable(f"{name} exited with status {proc.returncode} while "
                                             f"waiting until {what}: {logs}")  # fmt: skip
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting until {what} "
                                 f"(logs in {self.logs})")  # fmt: skip

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True,
                       capture_output=True, timeout=30)  # fmt: skip
        self.munge_socket = munge / "munge.socket"
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={self.munge_socket}",
            f"--key-file={key}", f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/munged.seed", f"--log-file={self.logs}/munged.log",
        ])  # fmt: skip
        self._wait("munged listens", self.munge_socket.exists)

    def _start_mariadb(self) -> int:
        data, port = self.root / "db", free_port()
        init = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=socket"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if init.returncode != 0:
            raise ClusterUnavailable(f"mariadb-install-db failed: {init.stderr.strip()[-300:]}")
        grant = self.root / "grant.sql"
        grant.write_text(
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';\n"
            f"GRANT ALL ON *.* TO '{DB_USER}'@'127.0.0.1';\n"
        )
        self._spawn("mariadbd", [
            "mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
            "--bind-address=127.0.0.1", f"--port={port}", f"--socket={data}/mysqld.sock",
            f"--pid-file={data}/mysqld.pid", f"--log-error={self.logs}/mariadbd.log",
            f"--init-file={grant}", "--skip-name-resolve", "--skip-log-bin",
            # throwaway accounting: durability buys nothing here
            "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
        ])  # fmt: skip
        self._wait("MariaDB accepts connections", lambda: _accepts(port))
        return port

    def _start_slurmdbd(self, db_port: int) -> int:
        port = free_port()
        conf = self.root / "slurmdbd.conf"  # slurmdbd reads it next to $SLURM_CONF
        conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={port}", "SlurmUser=root",
            f"LogFile={self.logs}/slurmdbd.log", f"PidFile={self.root}/state/slurmdbd.pid",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={db_port}", f"StorageUser={DB_USER}", f"StoragePass={DB_PASSWORD}",
            "StorageLoc=slurm_acct_db", "",
        ]))  # fmt: skip
        conf.chmod(0o600)  # slurmdbd refuses a config others can read (it holds a password)
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait("slurmdbd accepts connections", lambda: _accepts(port))
        return port

    def _write_slurm_conf(self, dbd_port: int) -> None:
        cpus = os.cpu_count() or 1
        root, logs = self.root, self.logs
        self.conf.write_text("\n".join([
            "ClusterName=ablate-test", f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            # cred_expire: also how long a requeued job waits before it may start again
            # (SLURM's default: 120 s)
            f"AuthInfo=socket={self.munge_socket},cred_expire={REQUEUE_DELAY_S}",
            f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/state/slurmctld.pid",
            f"SlurmdPidFile={root}/spool/slurmd.pid",
            f"SlurmctldLogFile={logs}/slurmctld.log", f"SlurmdLogFile={logs}/slurmd.log",
            # no cgroups: what works inside a container
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            # schedule every second, not every 30-60 s: a requeued task starts once its
            # begin time has passed, not at the next periodic pass
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1,bf_interval=1",
            "MpiDefault=none", "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost", f"AccountingStoragePort={dbd_port}",
            # with slurmdbd this names the munge socket of the accounting connection
            f"AccountingStoragePass={self.munge_socket}", "MailProg=/bin/true",
            # seconds between SIGTERM and SIGKILL when a job ends (SLURM's default: 30)
            "KillWait=10",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
        ]))  # fmt: skip


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so that a killed test run leaves no
    daemon behind (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
