"""Where studies live: Optuna RDB storages, a cross-process lock per study, worker liveness.

* Default storage: ``sqlite:///ablate-optuna.db`` in the working directory, with a 60 s
  busy timeout so that several worker processes on this machine wait for each other
  instead of failing with "database is locked". ``postgresql://`` / ``mysql://`` URLs
  let workers on many machines join one study.
* :class:`StudyLock` serialises the few short steps that must not interleave between
  workers (creating the study and its MLflow parent run, reaping dead trials, choosing
  and claiming the next trial): a ``filelock`` lock file ``<db>.lock`` for SQLite, a
  session-level advisory lock for PostgreSQL (``pg_advisory_lock``) and MySQL
  (``GET_LOCK``). Those locks die with the process or connection that holds them, so a
  killed worker never leaves a study locked.
* Crashed workers: every running trial records a heartbeat; a trial whose heartbeat is
  older than the grace period is failed by the next worker that looks
  (``optuna.storages.fail_stale_trials``), and on this machine a trial whose worker process
  is gone is failed at once (:func:`is_dead`, through ``psutil``: Linux, macOS, Windows).
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
        self._file_lock: Any = None  # SQLite: a filelock.FileLock on <db>.lock
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
                from filelock import FileLock

                self._lock_path.parent.mkdir(parents=True, exist_ok=True)
                self._file_lock = FileLock(self._lock_path)
                self._file_lock.acquire()
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
            if self._file_lock is not None and self._file_lock.is_locked:
                self._file_lock.release()
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
            self._file_lock = None
            self._conn = None
            if self._thread_lock.locked():
                self._thread_lock.release()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# -- liveness of worker processes on this machine ---------------------------------------------
def _process_start(pid: int) -> float | None:
    """When a process started (seconds since the epoch), to tell reused pids apart."""
    import psutil

    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.Error, OSError):
        return None


def _pid_space() -> str:
    """Where pids of this process are comparable: kernel boot and pid namespace (Linux).

    Hostnames alone are not enough: cluster nodes can share one, and containers on one
    kernel see different pids. Elsewhere the hostname is the best available guess.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        return f"{boot}/{namespace}"
    except OSError:  # macOS, Windows: this host since its last boot
        import psutil

        return f"host:{socket.gethostname()}:{int(psutil.boot_time())}"


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
    A zombie (killed, not yet reaped by its parent) counts as dead; a pid now used by a
    process that started at another time counts as dead (the pid was reused).
    """
    import psutil

    if not identity or identity.get("pid_space") != _pid_space():
        return False
    pid = identity.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return True
        now = round(process.create_time(), 2)
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, OSError):  # no permission to look: it exists
        return False
    started = identity.get("pid_start")
    if not isinstance(started, (int, float)) or isinstance(started, bool):
        return False  # recorded by an older ablate (clock ticks): cannot compare
    return abs(now - started) > 1.0


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
