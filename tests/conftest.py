"""Shared fixtures: every test that trains or tracks runs in its own temp directory with its
own SQLite MLflow store, so tests never touch the working tree or each other.

Reference facts about the official Compact-Transformers code live in
``tests/fixtures/reference/`` (see its README) and are read lazily, once per session, by the
``cct_keys`` / ``cct_model_table`` / ``cct_checkpoints`` fixtures. A test that asks for
``official_image_model`` runs once per official image model name.

Under CI (the environment variable ``CI`` set, as ``.ci/run`` runs) a test skipped because a
reference or fixture file is missing fails instead: a fresh clone must run every test. Skips
for what is legitimately optional -- no psycopg2, no CUDA -- stay skips; the PostgreSQL
server and the SLURM cluster that ``.ci/run`` installs are required there.

How the suite runs fast (``pyproject.toml`` ``[tool.pytest.ini_options]``):

* ``-n auto`` starts two pytest-xdist workers for a directory or the whole suite, none for
  named files or tests (``pytest_xdist_auto_num_workers``); each worker's torch (and every
  process it starts) uses one thread, so two workers share two cores instead of four threads
  fighting over them.
* ``--dist loadfile``: each file runs on one worker, so a module's fixtures (a served MLflow
  UI, a report made by a subprocess, a trained source run) are made once; the files with
  tests marked ``slow`` are handed out first.
* MLflow SQLite stores are migrated once per session (``mlflow_template``): ``workdir`` and
  the per-directory store fixtures get a new store in 0.05 s instead of 2-6 s of migrations.
* ``--timeout``: a hang fails its test, not the whole CI job.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import running_in_ci, unavailable  # tests/helpers.py

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:  # read by torch when it is imported, and by every process a test starts
    os.environ["OMP_NUM_THREADS"] = "1"

REFERENCE_DIR = ROOT / "tests" / "fixtures" / "reference"


# -- how the suite is distributed ----------------------------------------------------------


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: no workers (this process) when only files or tests are named, since
    starting workers would cost more than it saves; else one per usable core, from 2 to 8
    (each holds torch and MLflow in memory). $PYTEST_XDIST_AUTO_NUM_WORKERS overrides, as in
    pytest-xdist."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    named = [arg.split("::")[0] for arg in config.args]
    if named and not any(Path(arg).is_dir() for arg in named):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(max(2, cores or 1), 8)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under ``--dist loadfile`` a file is one unit of work, handed out in this order: the files
    # with tests marked slow go first, then those that train or track (a test asks for a
    # working directory), so that the long ones start early and the many short files fill in
    # around them instead of one worker finishing a long file alone at the end.
    if XDIST_WORKER:
        slow = {item.path for item in items if item.get_closest_marker("slow")}
        tracked = {item.path for item in items if "workdir" in getattr(item, "fixturenames", ())}
        # stable: file order otherwise kept
        items.sort(key=lambda item: (item.path not in slow, item.path not in tracked))


def pytest_configure(config: pytest.Config) -> None:
    if XDIST_WORKER and "torch" in sys.modules:  # imported before this file set the variable
        sys.modules["torch"].set_num_threads(1)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # as ablate.cli.exit_with does: the worker exits without a last garbage collection of
    # everything its tests imported and made (2-3 s at the end of every run)
    import gc

    gc.freeze()


# -- MLflow stores ----------------------------------------------------------------------------


class MlflowTemplate:
    """An empty MLflow SQLite store, migrated by MLflow once per test session.

    Creating a store runs MLflow's schema migrations (2-6 s on 2 cores); restoring this one
    takes 0.05 s. While ``mlflow_template`` is active, a SQLite store that MLflow finds empty
    in this process is restored from the template instead of migrated: the tables MLflow's
    migrations made, at the same revision; then MLflow goes on as with a fresh store (checks
    the schema, creates the default experiment with this store's artifact location), and the
    file appears only where MLflow opens a store, as before. The workers of one
    ``pytest -n`` run share one template.

    Args:
        path: the template's SQLite file, made on first use.
        migrate: MLflow's own ``_initialize_tables``.
    """

    def __init__(self, path: Path, migrate: Callable[[Any], None]):
        self.path, self._migrate = path, migrate

    def _ensure(self) -> None:
        from filelock import FileLock
        from mlflow.store.db.utils import create_sqlalchemy_engine

        with FileLock(f"{self.path}.lock"):
            if self.path.exists():
                return
            part = self.path.with_name(self.path.name + ".part")
            part.unlink(missing_ok=True)
            engine = create_sqlalchemy_engine(f"sqlite:///{part}")
            try:
                self._migrate(engine)
            finally:
                engine.dispose()
            os.replace(part, self.path)

    def copy_to(self, folder: Path, name: str = "mlflow.db") -> str:
        """A new store ``folder/name``, for another process (a server, a command) to open;
        its tracking URI."""
        self._ensure()
        with sqlite3.connect(self.path) as src, sqlite3.connect(folder / name) as dst:
            src.backup(dst)
        return f"sqlite:///{folder / name}"

    def initialize_tables(self, engine: Any) -> None:
        """In place of ``mlflow.store.db.utils._initialize_tables``."""
        import sqlalchemy

        if (
            engine.dialect.name != "sqlite"
            or engine.url.database in (None, "", ":memory:")
            or sqlalchemy.inspect(engine).get_table_names()  # partly created: MLflow's own way
        ):
            self._migrate(engine)
            return
        self._ensure()
        connection = engine.raw_connection()
        try:
            with sqlite3.connect(self.path) as src:
                src.backup(connection.driver_connection)
        finally:
            connection.close()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowTemplate]:
    """The session's :class:`MlflowTemplate`, active from now on in this process."""
    import mlflow.store.db.utils as db_utils

    base = tmp_path_factory.getbasetemp()
    if XDIST_WORKER:
        base = base.parent  # the run's folder, above each worker's own
    template = MlflowTemplate(base / "mlflow-template.db", db_utils._initialize_tables)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(db_utils, "_initialize_tables", template.initialize_tables)
        yield template


@pytest.fixture(scope="session")
def uninterrupted(
    tmp_path_factory: pytest.TempPathFactory, mlflow_template: MlflowTemplate
) -> dict[str, list[list[float]]]:
    """The per-epoch ``acc/val``, ``loss/val``, ``loss/train`` ([step, value] pairs) of an
    uninterrupted `ablate run` of CCT-2 softmax on digits at 8 px, batch 128, 10 epochs, seed
    0, on one thread: what a stopped, killed or requeued trial of that configuration must
    reproduce bit for bit once resumed. Trained once per test session, whichever worker
    asks first; the others read its file."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if XDIST_WORKER else base) / "uninterrupted"
    curves = folder / "curves.json"
    with FileLock(f"{folder}.lock"):
        if not curves.exists():
            _train_uninterrupted(folder, mlflow_template)
    return json.loads(curves.read_text())


def _train_uninterrupted(folder: Path, mlflow_template: MlflowTemplate) -> None:
    import torch
    from mlflow import MlflowClient

    from ablate.cli import main

    folder.mkdir(exist_ok=True)
    uri = mlflow_template.copy_to(folder)
    # stopped trials ran in processes on one thread each (OMP_NUM_THREADS=1): so does the
    # reference, since float sums reduce in a different order on more threads
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--dataset", "digits", "--img-size", "8", "--epochs", "10",
                     "--batch-size", "128", "--quiet", "--no-system-metrics", "--tracking-uri",
                     uri, "--checkpoint-dir", str(folder / "checkpoints")]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    history = client.get_metric_history
    curves = {key: sorted([m.step, m.value] for m in history(run.info.run_id, key))
              for key in ("acc/val", "loss/val", "loss/train")}  # fmt: skip
    (folder / "curves.json").write_text(json.dumps(curves))


@pytest.fixture(scope="session", autouse=True)
def _mlflow_stores_from_the_template(request: pytest.FixtureRequest) -> None:
    # Where the collected tests use MLflow; a run of tests that never import it skips the cost
    # of importing its store code.
    if "mlflow" in sys.modules:
        request.getfixturevalue("mlflow_template")


@pytest.fixture
def workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: MlflowTemplate
) -> Path:
    """A fresh working directory with MLFLOW_TRACKING_URI pointing at a SQLite file in it
    (made when something opens it, from the session's migrated template)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


@pytest.fixture
def existing_store(workdir: Path, mlflow_template: MlflowTemplate) -> str:
    """``workdir``'s MLflow store, made before the test starts (for tests whose commands run
    as processes, each of which would migrate a new store); its URI."""
    return mlflow_template.copy_to(workdir)


# -- a PostgreSQL server, one per session -----------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL server for the session (tests/postgres_server.py); use ``postgres``."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install ablate[test])")
    from postgres_server import PostgresServer, ServerUnavailable

    try:
        server = PostgresServer().__enter__()
    except ServerUnavailable as err:
        unavailable(f"no PostgreSQL server: {err}")
    try:
        yield server
    finally:
        server.remove()


_databases = iter(range(1_000_000))


@pytest.fixture
def postgres(postgres_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new database on the session's server (``url``, ``server``). The test may stop and
    start the server (a restart, an outage); it is running again after the test."""
    from postgres_server import Database

    name = re.sub(r"\W", "_", request.node.name).lower()[:50]
    yield Database(postgres_server, postgres_server.database(f"{name}_{next(_databases)}"))
    if not postgres_server.running:
        postgres_server.start()


# -- reference facts about the official code --------------------------------------------------

_reference_cache: dict[str, Any] = {}


def reference_json(name: str) -> Any:
    """The parsed ``tests/fixtures/reference/<name>``; fails (never skips) when it is missing.

    Args:
        name: file name, e.g. ``cct_keys.json``.
    """
    if name not in _reference_cache:
        path = REFERENCE_DIR / name
        if not path.is_file():
            pytest.fail(
                f"missing reference file {path}; it belongs to the repository "
                "(restore tests/fixtures/reference/ from git)",
                pytrace=False,
            )
        _reference_cache[name] = json.loads(path.read_text(encoding="utf-8"))
    return _reference_cache[name]


@pytest.fixture(scope="session")
def cct_keys() -> dict[str, list[list]]:
    """Official model name -> its state-dict ``[key, shape]`` pairs, in order."""
    # "_notes" records how the lists were made (and each model's parameter count).
    return {k: v for k, v in reference_json("cct_keys.json").items() if not k.startswith("_")}


@pytest.fixture(scope="session")
def cct_model_table() -> dict[str, dict]:
    """Official model name -> its row (layers, heads, convolutions, parameter counts...)."""
    return {row["name"]: row for row in reference_json("cct_model_table.json")}


@pytest.fixture(scope="session")
def cct_checkpoints() -> dict[str, Any]:
    """Published checkpoint URLs by where the official repository lists them."""
    return reference_json("cct_checkpoints.json")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Read at collection, and only for the modules whose tests ask for it.
    if "official_image_model" in metafunc.fixturenames:
        rows = reference_json("cct_model_table.json")
        names = [r["name"] for r in rows if not r["name"].startswith("text_")]
        metafunc.parametrize("official_image_model", names)


# -- CI: a skip for a missing file is a failure -----------------------------------------------

_MISSING_FILE_PATH = re.compile(r"shared/reference|tests/fixtures")
_REFERENCE_WORD = re.compile(r"\b(?:reference|fixture)s?\b", re.IGNORECASE)
_MISSING_WORDS = re.compile(
    r"\bmissing\b|not available|not found|does not exist|no such file|cannot be found",
    re.IGNORECASE,
)


def is_missing_file_skip(reason: str) -> bool:
    """Whether a skip reason says a reference / fixture file is missing.

    Args:
        reason: the skip message.
    """
    if _MISSING_FILE_PATH.search(reason):
        return True
    return bool(_REFERENCE_WORD.search(reason) and _MISSING_WORDS.search(reason))


def _fail_missing_file_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not running_in_ci():
        return
    longrepr = report.longrepr
    # A skip's longrepr is (file, line, "Skipped: reason").
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if is_missing_file_skip(reason):
        report.outcome = "failed"
        report.longrepr = f"CI does not allow skipping for a missing file: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_missing_file_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    # Module-level skips (pytest.skip(allow_module_level=True), importorskip) land here.
    outcome = yield
    _fail_missing_file_skip(outcome.get_result())
