"""Where studies live: Optuna RDB storages, a cross-process lock per study, worker liveness.

* Storages: ``sqlite:///ablate-optuna.db`` here by default (a 60 s busy timeout, so that
  workers on this machine wait for each other), ``postgresql://`` / ``mysql://`` for many
  machines. Transient errors of an opened storage (a server restart, "the database system
  is starting up", a reset connection) are retried with backoff for :func:`patience`
  seconds, then :class:`StorageUnavailable` names it; a first contact fails at once.
* :class:`StudyLock` serialises the short steps that must not interleave between workers
  (creating the study and its parent run, reaping dead trials, claiming the next trial): a
  ``filelock`` file ``<db>.lock`` for SQLite, a session-level advisory lock for PostgreSQL
  and MySQL. They die with the process or connection that holds them; a frozen holder is
  named (host, pid) after :func:`patience` seconds.
* Crashed workers: a trial whose heartbeat is older than the grace period is failed by the
  next worker that looks (``optuna.storages.fail_stale_trials``); on this machine one whose
  worker process is gone is failed at once (:func:`is_dead`, through ``psutil``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from ablate.exceptions import AblateError, ConfigError, first_line
from ablate.tracking.store import display_url, with_installed_driver

__all__ = ["DEFAULT_STORAGE", "HEARTBEAT_INTERVAL", "GRACE_PERIOD", "resolve_storage_url",
           "display_url", "open_storage", "read_trials", "database_errors", "patience",
           "StorageUnavailable", "StudyLock", "process_identity", "is_dead", "heartbeat"]

DEFAULT_STORAGE = "sqlite:///ablate-optuna.db"
HEARTBEAT_INTERVAL = 10  # seconds between heartbeats of a running trial
GRACE_PERIOD = 60  # a running trial without a heartbeat for this long counts as dead
SQLITE_BUSY_TIMEOUT = 60  # seconds a SQLite writer waits for the lock before failing
_SCHEMES = ("sqlite", "postgresql", "mysql")
PATIENCE_ENV = "ABLATE_STORAGE_PATIENCE"  # seconds; default 300
# Words of the errors worth waiting out: the server restarts, or the connection was lost.
_TRANSIENT = (
    "starting up", "shutting down", "terminating connection", "server closed the connection",
    "connection refused", "could not connect", "connection reset", "timed out", "broken pipe",
    "lost connection", "gone away", "database is locked",
)  # fmt: skip


def resolve_storage_url(given: str | None) -> str:
    """--storage, else the study file's ``storage``, else the local SQLite file.

    A plain path (``runs/ablate.db``) means a SQLite file.
    """
    url = given or DEFAULT_STORAGE
    if "://" not in url:
        url = f"sqlite:///{url}"
    if _scheme(url) not in _SCHEMES:
        raise ConfigError(f"{display_url(url)!r} is not a supported database; use sqlite:///FILE "
                          "(one machine), postgresql://USER@HOST/DB or mysql://USER@HOST/DB (many "
                          "machines)")  # fmt: skip
    return with_installed_driver(url)


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
    url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
    on_dead_trial: Callable[[Any, Any], None] | None = None,
) -> Any:  # fmt: skip
    """An ``optuna.storages.RDBStorage`` (of a :func:`resolve_storage_url` URL) with heartbeats,
    busy timeout and pre-ping; ``on_dead_trial(study, frozen_trial)`` is called for each trial
    failed as dead (no heartbeat for ``grace_period`` seconds)."""
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
            return _patient_storage_class()(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period, heartbeat_stale_trial_callback=on_dead_trial)
    except Exception as err:
        raise _storage_error(url, err) from None


def database_errors() -> contextlib.AbstractContextManager:
    """Suppresses what a storage raises while its database is busy or away (after
    :func:`patiently` gave up), where the next attempt will do."""
    import optuna
    import sqlalchemy.exc

    return contextlib.suppress(AblateError, optuna.exceptions.StorageInternalError,
                               sqlalchemy.exc.SQLAlchemyError)  # fmt: skip


def read_trials(url: str, study_name: str) -> list[Any]:
    """Every trial of a study (frozen, not copied); KeyError when there is no such study."""
    storage = open_storage(url)
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False)
    finally:
        storage.engine.dispose()


def patience() -> float:
    """Seconds to wait out a database that is away or a study lock that is held
    (``$ABLATE_STORAGE_PATIENCE``, default 300)."""
    try:
        return max(0.0, float(os.environ.get(PATIENCE_ENV, 300)))
    except ValueError:
        raise ConfigError(f"${PATIENCE_ENV}: expected seconds, got {os.environ[PATIENCE_ENV]!r}")


class StorageUnavailable(AblateError):
    """The study's database stayed unreachable for :func:`patience` seconds."""


def _is_transient(err: BaseException) -> bool:
    """A lost connection or a restarting server, found anywhere in the exception chain
    (Optuna reports them as "invalid data in the commit")."""
    import sqlalchemy.exc

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return any(words in str(seen).lower() for words in _TRANSIENT)
        seen = seen.__cause__ or seen.__context__
    return False


_waiting = threading.local()  # set while a call retries: calls nested in it do not retry
_outage = threading.Event()  # this process said that its storage is away


def patiently(call: Callable[[], Any], url: str) -> Any:
    """``call()``, retried with backoff while it fails transiently, for :func:`patience` s."""
    if getattr(_waiting, "active", False):
        return call()
    deadline, delay = None, 0.25
    _waiting.active = True
    try:
        while True:
            try:
                result = call()
                if deadline is not None:
                    _outage.clear()  # back: a later outage is announced again
                return result
            except Exception as err:
                if not _is_transient(err):
                    raise
                reason = _first_line(err.__cause__ or err)
                now = time.monotonic()
                if deadline is None:
                    deadline = now + patience()
                    if not _outage.is_set():  # once per outage, not once per thread
                        _outage.set()
                        print(f"ablate study: storage {display_url(url)} unreachable "
                              f"({reason}); retrying for up to {patience():.0f} s",
                              file=sys.stderr, flush=True)
                if now >= deadline:
                    raise StorageUnavailable(f"storage {display_url(url)} unreachable for "
                                             f"{patience():.0f} s ({reason})") from None
                time.sleep(min(delay, deadline - now))
                delay = min(2 * delay, 5.0)
    finally:
        _waiting.active = False


@functools.cache
def _patient_storage_class() -> type:
    """``RDBStorage`` whose storage calls go through :func:`patiently` once it is open."""
    import optuna

    base = optuna.storages.RDBStorage

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            return patiently(lambda: method(self, *args, **kwargs), self.url)

        return call

    names = [n for n in vars(optuna.storages.BaseStorage) if not n.startswith("_")]
    names += ["record_heartbeat", "_get_stale_trial_ids"]
    methods = {n: wrap(getattr(base, n)) for n in names if callable(getattr(base, n, None))}
    return type("PatientRDBStorage", (base,), methods)


def _first_line(err: BaseException) -> str:
    return first_line(getattr(err, "orig", None) or err)  # the driver's words, not SQLAlchemy's


def _storage_error(url: str, err: Exception) -> AblateError:
    """One line for a storage that cannot be reached or has no driver installed."""
    if isinstance(err, ImportError) or "No module named" in str(err):
        driver = "psycopg2-binary" if _scheme(url) == "postgresql" else "PyMySQL"
        return AblateError(f"storage {display_url(url)}: the database driver is not installed; "
                           f"install it with: pip install {driver}")  # fmt: skip
    return AblateError(f"cannot open study storage {display_url(url)}: {_first_line(err)}")


class StudyLock:
    """A lock shared by every worker of one study (per study, so that different studies never
    wait for each other), on this machine or (RDB servers) any.

    Use as a context manager around short critical sections; not re-entrant. A holder that
    does not let go within ``wait`` seconds (default: :func:`patience`; a stopped process, a
    hung command) is named in an :class:`AblateError`: host and pid, and for PostgreSQL its
    database session.
    """

    def __init__(self, url: str, study_name: str, wait: float | None = None):
        self.url, self.study_name = url, study_name
        self.wait = patience() if wait is None else wait
        self._scheme = _scheme(url)
        self._thread_lock = threading.Lock()  # one holder per process at a time
        self._file_lock: Any = None  # SQLite: a filelock.FileLock on <db>.lock
        self._conn: Any = None
        self._engine: Any = None
        self._connected = False  # a lost server is waited out only after a first contact
        path = _sqlite_path(url) if self._scheme == "sqlite" else None
        self._lock_path = Path(path + ".lock") if path is not None else None

    def _sql(self, postgres: str, mysql: str) -> tuple[Any, dict[str, Any]]:
        """A lock statement and its key: PostgreSQL's bigint, or a MySQL name (64 chars)."""
        import sqlalchemy

        if self._scheme == "postgresql":
            return sqlalchemy.text(f"SELECT {postgres}"), {"k": self._key()}
        return sqlalchemy.text(f"SELECT {mysql}"), {"k": f"ablate:{self._key():x}"}

    def _key(self) -> int:
        digest = hashlib.blake2b(f"ablate-study:{self.study_name}".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)  # advisory keys are bigint

    def __enter__(self) -> "StudyLock":
        self._thread_lock.acquire()
        try:
            deadline = time.monotonic() + self.wait
            if self._lock_path is not None:
                self._acquire_file()
            elif self._scheme != "sqlite":
                take = functools.partial(self._acquire_server, deadline)
                patiently(take, self.url) if self._connected else take()
        except BaseException as err:  # KeyboardInterrupt while waiting too
            self._release()
            if isinstance(err, Exception) and not isinstance(err, AblateError):
                raise _storage_error(self.url, err) from None
            raise
        return self

    def _acquire_file(self) -> None:
        from filelock import FileLock, Timeout

        assert self._lock_path is not None
        holder = self._lock_path.with_name(self._lock_path.name + ".holder")
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._file_lock = FileLock(self._lock_path)
        try:
            self._file_lock.acquire(timeout=self.wait)
        except Timeout:
            who = holder.read_text().strip() if holder.is_file() else "another process"
            raise self._held(who) from None
        holder.write_text(_whoami())

    def _acquire_server(self, deadline: float) -> None:
        import sqlalchemy

        if self._conn is not None:  # a connection lost while waiting
            self._close_connection()
        if self._engine is None:
            from sqlalchemy.pool import NullPool

            # Its own connection: the lock belongs to the session that took it, so it must
            # not be shared with (or returned to) the storage's connection pool. Its name
            # tells a waiting command who holds the lock.
            named = {"application_name": _whoami()[:63]} if self._scheme == "postgresql" else {}
            self._engine = sqlalchemy.create_engine(self.url, poolclass=NullPool,
                                                    connect_args=named)  # fmt: skip
        self._conn = self._engine.connect()
        self._connected = True
        take = self._sql("pg_try_advisory_lock(:k)", "GET_LOCK(:k, 0)")
        pause = 0.05
        while not self._conn.execute(*take).scalar():
            self._conn.commit()
            if time.monotonic() >= deadline:
                raise self._held(*self._server_holder())
            time.sleep(pause)
            pause = min(2 * pause, 1.0)
        self._conn.commit()

    def _server_holder(self) -> tuple[str, str]:
        """Who holds the lock, and how to end that database session."""
        import sqlalchemy

        if self._scheme != "postgresql":
            conn_id = self._conn.execute(*self._sql("", "IS_USED_LOCK(:k)")).scalar()
            return f"MySQL connection {conn_id}", f"KILL {conn_id}"
        key = self._key() & 0xFFFFFFFFFFFFFFFF
        holder = sqlalchemy.text(
            "SELECT a.application_name, a.pid, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid::bigint = :hi AND l.objid::bigint = :lo")  # fmt: skip
        row = self._conn.execute(holder, {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).first()
        if row is None:
            return "another session", ""
        name, pid, client = row
        who = f"{name or 'a client'} (database session {pid} from {client or 'a local socket'})"
        return who, f"SELECT pg_terminate_backend({pid})"

    def _held(self, who: str, end_session: str = "") -> AblateError:
        session = f" or end its database session ({end_session})" if end_session else ""
        return AblateError(f"study lock of {self.study_name!r} on {display_url(self.url)} held "
                           f"for more than {self.wait:.0f} s by {who}; if that command is stuck "
                           f"(stopped or hung), end it{session}, then run this command again")

    def __exit__(self, *exc: Any) -> None:
        self._release()

    def _release(self) -> None:
        try:
            if self._file_lock is not None and self._file_lock.is_locked:
                self._file_lock.release()
            if self._conn is not None:
                import sqlalchemy.exc

                with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):  # gone with its session
                    self._conn.execute(*self._sql("pg_advisory_unlock(:k)", "RELEASE_LOCK(:k)"))
                self._close_connection()
        finally:
            self._file_lock = None
            if self._thread_lock.locked():
                self._thread_lock.release()

    def _close_connection(self) -> None:
        import sqlalchemy.exc

        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            self._conn.close()  # closing the session releases the lock in any case
        self._conn = None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _whoami() -> str:
    return f"ablate on {socket.gethostname()} pid {os.getpid()}"


# -- liveness of worker processes on this machine ---------------------------------------------
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
    """Host, pid space, pid and start time (to tell reused pids apart) of this process,
    stored with each trial."""
    import psutil

    return {"host": socket.gethostname(), "pid_space": _pid_space(), "pid": os.getpid(),
            "pid_start": round(psutil.Process().create_time(), 2)}


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


@contextlib.contextmanager
def heartbeat(storage: Any, trial_id: int, interval: float) -> Iterator[None]:
    """Record a trial's heartbeat every ``interval`` seconds from a daemon thread, as
    ``optuna.Study.optimize`` does (workers here claim trials under the lock and ask/tell)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with database_errors():  # a database hiccup must not kill the trial; next beat
                storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)
