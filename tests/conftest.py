"""Shared fixtures: every test that trains or tracks runs in its own temp directory with its
own SQLite MLflow store, so tests never touch the working tree or each other.

Reference facts about the official Compact-Transformers code live in
``tests/fixtures/reference/`` (see its README) and are read lazily, once per session, by the
``cct_keys`` / ``cct_model_table`` / ``cct_checkpoints`` fixtures. A test that asks for
``official_image_model`` runs once per official image model name.

Under CI (the environment variable ``CI`` set, as ``.ci/run`` runs) a test skipped because a
reference or fixture file is missing fails instead: a fresh clone must run every test. Skips
for what is legitimately optional -- no PostgreSQL server, no psycopg2, no CUDA -- stay skips.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

REFERENCE_DIR = ROOT / "tests" / "fixtures" / "reference"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory with MLFLOW_TRACKING_URI pointing at a SQLite file in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


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


def running_in_ci() -> bool:
    """True when the environment variable CI is set to anything but '', 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


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
