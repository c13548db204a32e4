"""Start `ablate study` as a separate process, as a user or another machine would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study_cli(
    workdir: Path, *args: str, threads: int | None = None, new_session: bool = False
) -> subprocess.Popen:
    """`ablate study ARGS` in ``workdir``; ``threads`` pins OMP_NUM_THREADS (several commands
    sharing this machine's cores, as if they ran on separate machines); ``new_session``
    starts it in its own process group, which a test can signal as a scheduler would."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.cli", "study", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )
