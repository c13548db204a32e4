"""Helpers the test files import (``from helpers import ...``); not collected.

``conftest`` is not importable by name from a test file: each folder has its own.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def running_in_ci() -> bool:
    """True when the environment variable CI is set to anything but '', 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip for something a test needs that cannot start here; fail under CI, which installs
    it (.ci/run)."""
    if running_in_ci():
        pytest.fail(f"CI needs this to run: {reason}", pytrace=False)
    pytest.skip(reason)


def run_stopped_after(cfg: Any, epoch: int, **kwargs: Any) -> str:
    """Train ``cfg`` until a stop ends it after ``epoch`` is recorded (a KeyboardInterrupt from
    the epoch hook, as the loop sees a stop signal); the id of the run it left."""
    from ablate.trial.run import resolve, run_trial

    def stop(done: int, row: Any) -> None:
        if done == epoch:
            raise KeyboardInterrupt

    runs: list[Any] = []
    with pytest.raises(KeyboardInterrupt):
        run_trial(resolve(cfg), on_epoch=stop, on_run_open=runs.append, **kwargs)
    return runs[0].run_id


def install_plugin(folder: Any, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """A real installed-distribution layout in ``folder`` (``<name>-1.0.dist-info`` with METADATA
    and ``entry_points.txt``) plus its ``modules`` (module name -> source); put ``folder`` on
    ``sys.path`` to install it."""
    from pathlib import Path

    folder = Path(folder)
    dist = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(source)
