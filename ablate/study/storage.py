"""Where studies live: Optuna RDB storages, a cross-process lock per study, worker liveness.

* Default storage: ``sqlite:///ablate-optuna.db`` in the working directory, with a 60 s
  busy timeout so that several worker processes on this machine wait for each other
  instead of failing with "database is locked". ``postgresql://`` / ``mysql://`` URLs
  let workers on many machines join one study.
* :class:`StudyLock` serialises the few short steps that must not interleave between
  workers (creating the study and its MLflow parent run, reaping dead trials, choosing
  and claiming the next trial): an ``flock`` on ``<db>.lock`` for SQLite, a session-level
  advisory lock for PostgreSQL (``pg_advisory_lock``) and MySQL (``GET_LOCK``). Those
  locks die with the process or connection that holds them, so a killed worker never
  leaves a study locked.
* Crashed workers: every running trial records a heartbeat; a trial whose heartbeat is
  older than the grace period is failed by the next worker that looks
  (``optuna.storages.fail_stale_trials``), and on this machine a trial whose worker process
  is gone is failed at once (:func:`is_dead`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from ablate.exceptions import AblateError, ConfigError

__all__ = [
    "DEFAULT_STORAGE",
    "HEARTBEAT_INTERVAL",
    "GRACE_PERIOD",
    "resolve_storage_url",
    "display_url",
    "open_storage",
    "StudyLock",
    "process_identity",
    "is_dead",
    "Heartbeat",
]

DEFAULT_STORAGE = "sqlite:///ablate-optuna.db"
HEARTBEAT_INTERVAL = 10  # seconds between heartbeats of a running trial
GRACE_PERIOD = 60  # a running trial without a heartbeat for this long counts as dead
SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
_SCHEMES = ("sqlite", "postgresql", "mysql")


def resolve_storage_url(given: str | None) -> str:
    """--storage, else the study file's ``storage``, else the local SQLite file.

    A plain path (``runs/ablate.db``) means a SQLite file.
    """
    url = given or DEFAULT_STORAGE
    if "://" not in url:
        url = f"sqlite:///{url}"
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"{display_url(url)!r} is not a supported database; use sqlite:///FILE (one machine), "
            "postgresql://USER@HOST/DB or mysql://USER@HOST/DB (many machines)"
        )
    return _with_installed_driver(url)


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here.

    Likewise ``mysql://`` (mysqlclient) falls back to PyMySQL. An explicit ``+driver`` is kept.
    """
    import importlib.util

    head, rest = url.split("://", 1)
    if "+" in head:
        return url
    choices = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}.get(head)
    if choices is None:
        return url
    default, fallback = choices
    if (
        importlib.util.find_spec(default) is None
        and importlib.util.find_spec(fallback) is not None
    ):
        return f"{head}+{fallback}://{rest}"
    return url


def display_url(url: str) -> str:
    """The URL without its password, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0]


def _sqlite_path(url: str) -> str | None:
    """The database file of a sqlite URL, or None for an in-memory database."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return database


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
    on_dead_trial: Callable[[Any, Any], None] | None = None,
) -> Any:
    """An ``optuna.storages.RDBStorage`` with heartbeats, busy timeout and pre-ping.

    Args:
        url: a resolved storage URL (see :func:`resolve_storage_url`).
        heartbeat_interval: seconds between heartbeats of running trials.
        grace_period: seconds without a heartbeat after which a trial counts as dead.
        on_dead_trial: ``(study, frozen_trial)`` called for each trial failed as dead.
    """
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if _scheme(url) == "sqlite":
        path = _sqlite_path(url)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    else:
        # Trials last hours; a connection idle that long may have been dropped by the server.
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=on_dead_trial,
            )
    except Exception as err:
        raise _storage_error(url, err) from None


def _storage_error(url: str, err: Exception) -> AblateError:
    """One line for a storage that cannot be reached or has no driver installed."""
    if isinstance(err, ImportError) or "No module named" in str(err):
        driver = "psycopg2-binary" if _scheme(url) == "postgresql" else "PyMySQL"
        return AblateError(
            f"storage {display_url(url)}: the database driver is not installed; install it with: "
            f"pip install {driver}"
        )
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    return AblateError(f"cannot open study storage {display_url(url)}: {first[:300]}")


class StudyLock:
    """A lock shared by every worker of one study, on this machine or (RDB servers) any.

    Use as a context manager around short critical sections; re-entrant per thread is
    not needed and not supported.

    Args:
        url: the study's storage URL.
        study_name: the lock is per study, so different studies never wait for each other.
    """

    def __init__(self, url: str, study_name: str):
        self.url = url
        self.study_name = study_name
        self._scheme = _scheme(url)
        self._thread_lock = threading.Lock()  # one holder per process at a time
        self._file: Any = None
        self._conn: Any = None
        self._engine: Any = None
        self._lock_path: Path | None = None
        if self._scheme == "sqlite":
            path = _sqlite_path(url)
            if path is not None:
                self._lock_path = Path(path + ".lock")

    def _key(self) -> int:
        digest = hashlib.blake2b(
            f"ablate-study:{self.study_name}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big", signed=True)  # PostgreSQL advisory keys are bigint

    def _server_engine(self) -> Any:
        if self._engine is None:
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            # Its own connection: the lock belongs to the session that took it, so it must
            # not be shared with (or returned to) the storage's connection pool.
            self._engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
        return self._engine

    def __enter__(self) -> "StudyLock":
        self._thread_lock.acquire()
        try:
            self._acquire()
        except Exception as err:
            self._release()
            if isinstance(err, AblateError):
                raise
            raise _storage_error(self.url, err) from None
        except BaseException:  # KeyboardInterrupt while waiting for the lock
            self._release()
            raise
        return self

    def _acquire(self) -> None:
        if self._scheme == "sqlite":
            if self._lock_path is not None:
                self._lock_path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self._lock_path, "a+b")
                _lock_file(self._file)
        else:
            import sqlalchemy

            self._conn = self._server_engine().connect()
            if self._scheme == "postgresql":
                self._conn.execute(
                    sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key()}
                )
            else:  # mysql: names are limited to 64 characters
                name = f"ablate:{self._key():x}"
                got = self._conn.execute(
                    sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": name}
                ).scalar()
                if got != 1:
                    raise AblateError(
                        f"could not take the study lock {name} on {display_url(self.url)}"
                    )
            self._conn.commit()

    def __exit__(self, *exc: Any) -> None:
        self._release()

    def _release(self) -> None:
        try:
            if self._file is not None:
                _unlock_file(self._file)
                self._file.close()
            if self._conn is not None:
                import sqlalchemy

                try:
                    if self._scheme == "postgresql":
                        self._conn.execute(
                            sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key()}
                        )
                    else:
                        self._conn.execute(
                            sqlalchemy.text("SELECT RELEASE_LOCK(:n)"),
                            {"n": f"ablate:{self._key():x}"},
                        )
                finally:
                    self._conn.close()  # closing the session releases the lock in any case
        finally:
            self._file = None
            self._conn = None
            if self._thread_lock.locked():
                self._thread_lock.release()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _lock_file(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        while True:
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:  # LK_LOCK gives up after 10 s; keep waiting
                continue
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _unlock_file(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# -- liveness of worker processes on this machine ---------------------------------------------
def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat(5)


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[0] if fields else None


def _pid_space() -> str:
    """Where pids of this process are comparable: kernel boot and pid namespace (Linux).

    Hostnames alone are not enough: cluster nodes can share one, and containers on one
    kernel see different pids. Elsewhere the hostname is the best available guess.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        return f"{boot}/{namespace}"
    except OSError:
        return f"host:{socket.gethostname()}"


def process_identity() -> dict[str, Any]:
    """Host, pid space, pid and pid start time of this process, stored with each trial."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid_space": _pid_space(),
        "pid": pid,
        "pid_start": _process_start(pid),
    }


def is_dead(identity: dict[str, Any] | None) -> bool:
    """True when ``identity`` names a process in this pid space that no longer runs.

    Trials of other machines or containers are never judged here (their heartbeat is).
    """
    if not identity or identity.get("pid_space") != _pid_space():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if _process_state(pid) in ("Z", "X"):  # killed, not yet reaped by its parent
        return True
    started = identity.get("pid_start")
    now = _process_start(pid)
    return bool(started and now and started != now)  # the pid was reused


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds from a daemon thread.

    ``optuna.Study.optimize`` runs such a thread itself; workers here claim trials under
    the study lock and ask/tell them, so they run their own.
    """

    def __init__(self, storage: Any, trial_id: int, interval: float):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{trial_id}", daemon=True
        )

    def _run(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup must not kill the trial; retry next beat
                pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
