"""Start the `ablate` command as a separate process, as a user or another machine would.

Each command is a real process of its own (its pid, process group, signals, exit status,
stdout and stderr, working directory and environment), but not a fresh interpreter: it is
forked from a server process that imported torch, MLflow, Optuna and ablate once
(:mod:`multiprocessing`'s forkserver, started on first use in each pytest process). That
saves the 4-5 s of imports a fresh interpreter spends before the command does anything, on
every one of the ~40 commands the suite starts. The processes ablate starts itself (study
workers, submitit and SLURM array tasks, the MLflow UI) are fresh interpreters as always,
and so is ``fresh=True`` (the import-time behaviour a test may be about).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing
import multiprocessing.forkserver
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLI = str(ROOT / "ablate" / "cli.py")  # sys.argv[0] of `python -m ablate.cli`
MAIN = "ablate.cli:main"
PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL
# what a command imports before it trains or tracks (the forkserver imports them once)
PRELOAD = ["ablate.cli", "ablate.trial.run", "ablate.study.supervisor", "ablate.study.launcher",
           "ablate.tracking.tracker", "ablate.compare", "mlflow", "mlflow.pytorch",
           "mlflow.store.tracking.sqlalchemy_store", "optuna", "sklearn.metrics",
           "sklearn.datasets", "sklearn.model_selection", "matplotlib.pyplot", "submitit",
           "psycopg2", "torch.export", "warm_start"]  # fmt: skip

_context: Any = None
_started: list["CliProcess"] = []


def _forkserver() -> Any:
    global _context
    if _context is None:
        for module in PRELOAD:  # here first: the forkserver would skip one that fails quietly
            importlib.import_module(module)
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        # Python 3.11's forkserver imports its preloads on the default sys.path, without this
        # folder (warm_start): give it the path through the environment it starts with
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(HERE), previous]))
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            if previous is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = previous
        atexit.register(_kill_leftovers)  # multiprocessing joins its children at exit
    return _context


def _kill_leftovers() -> None:
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _command(main: str, argv: list[str], cwd: str, env: dict[str, str], outputs: list[Any],
             new_session: bool) -> None:  # fmt: skip
    """In the forked process: become the command, run it, exit with its status."""
    if new_session:
        os.setsid()
    for fd, target in zip((1, 2), outputs):
        if target == STDOUT:
            os.dup2(1, 2)
        elif target is not None:  # a socket (a pipe to the test), a file name, or DEVNULL
            sink = (target.detach() if isinstance(target, socket.socket)
                    else os.open(os.devnull if target == DEVNULL else target,
                                 os.O_WRONLY | os.O_APPEND | os.O_CREAT))  # fmt: skip
            os.dup2(sink, fd)
            os.close(sink)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if env.get("OMP_NUM_THREADS"):  # torch read it when the server imported it
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    module, function = main.split(":")
    sys.argv = [CLI if main == MAIN else module, *argv]
    code: Any = 1
    try:
        code = getattr(importlib.import_module(module), function)(argv)
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:  # what the interpreter prints for an uncaught exception
        import traceback

        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()  # as at interpreter exit (multiprocessing skips them)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


class CliProcess:
    """The part of :class:`subprocess.Popen` the tests use, for a forked `ablate` command
    (or ``main``, a ``module:function`` of the same shape: ``function(argv) -> status``)."""

    def __init__(self, argv: list[str], *, cwd: Path | str, env: Mapping[str, str],
                 stdout: Any = PIPE, stderr: Any = STDOUT, text: bool = True,
                 new_session: bool = False, main: str = MAIN) -> None:  # fmt: skip
        ours, theirs, outputs = [], [], []
        for target in (stdout, stderr):
            if target == PIPE:
                mine, child = socket.socketpair()
                mode, encoding = ("r", "utf-8") if text else ("rb", None)
                ours.append(mine.makefile(mode, encoding=encoding))
                mine.close()  # the file keeps the socket open
                theirs.append(child)
                outputs.append(child)
            else:
                ours.append(None)
                outputs.append(getattr(target, "name", target))  # a file: its name
        self.stdout: IO | None = ours[0]
        self.stderr: IO | None = ours[1]
        self.args = ["ablate" if main == MAIN else main, *argv]
        self._process = _forkserver().Process(
            target=_command, args=(main, argv, str(cwd), dict(env), outputs, new_session),
            name=" ".join(self.args)[:60])  # fmt: skip
        self._process.start()
        for child in theirs:
            child.close()  # our copy: EOF comes when the command (and what it started) ends
        self.pid: int = self._process.pid
        self.returncode: int | None = None
        _started.append(self)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """Everything the command writes until it ends (``subprocess.Popen.communicate``)."""
        read: dict[int, Any] = {}

        def drain(index: int, stream: IO) -> None:
            read[index] = stream.read()
            stream.close()

        readers = [threading.Thread(target=drain, args=(i, s), daemon=True)
                   for i, s in enumerate((self.stdout, self.stderr)) if s is not None]  # fmt: skip
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
            if reader.is_alive():  # something the command started still holds the pipe
                raise subprocess.TimeoutExpired(self.args, timeout)
        return read.get(0), read.get(1)

    def send_signal(self, signum: int) -> None:
        """As Popen's: nothing once the command has ended (its pid is reaped at once, by the
        forkserver, where Popen's child stays a zombie until waited for)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)


def ablate_cli(workdir: Path | str, *args: str, env: Mapping[str, str] | None = None,
               threads: int | None = None, new_session: bool = False, fresh: bool = False,
               stdout: Any = PIPE, stderr: Any = STDOUT, main: str = MAIN) -> Any:  # fmt: skip
    """`ablate ARGS` in ``workdir``, as a process (stdout and stderr together by default);
    ``env``: the whole environment (default: this one); ``threads`` pins OMP_NUM_THREADS
    (several commands sharing this machine's cores, as if they ran on separate machines);
    ``new_session`` starts it in its own process group, which a test can signal as a
    scheduler would; ``fresh``: a new interpreter (``subprocess.Popen``); ``main``: another
    command's ``module:function`` (a script on ``sys.path``, e.g. ``gpu_check:main``)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if fresh:
        assert main == MAIN, "a fresh interpreter runs `python -m ablate.cli`"
        return subprocess.Popen([sys.executable, "-m", "ablate.cli", *args], cwd=workdir,
                                env=env, stdout=stdout, stderr=stderr, text=True,
                                start_new_session=new_session)  # fmt: skip
    return CliProcess(list(args), cwd=workdir, env=env, stdout=stdout, stderr=stderr,
                      new_session=new_session, main=main)


def run_ablate(workdir: Path | str, *args: str, timeout: float = 300,
               **kwargs: Any) -> subprocess.CompletedProcess:  # fmt: skip
    """`ablate ARGS` to its end (:func:`ablate_cli`): its status, stdout and stderr, as
    ``subprocess.run(..., capture_output=True, text=True)`` returns them."""
    proc = ablate_cli(workdir, *args, stderr=PIPE, **kwargs)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def study_cli(workdir: Path | str, *args: str, **kwargs: Any) -> Any:
    """`ablate study ARGS` in ``workdir`` (:func:`ablate_cli`)."""
    return ablate_cli(workdir, "study", *args, **kwargs)
