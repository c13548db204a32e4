"""Stop signals: end a run between steps, never in the middle of its bookkeeping.

SLURM sends SIGTERM at preemption, at the time limit and on ``scancel`` (and, with
``--signal=USR1@90`` or submitit's ``USR2``, a warning before the time limit); a user
presses Ctrl-C. While :class:`StopSignals` is active, each of them raises
:class:`~ablate.exceptions.Stopped` in the main thread, which abandons the current training
step. Inside :func:`critical` (an epoch's checkpoint + logging, claiming a trial, telling
Optuna a result) the stop waits until the section is done, so a stop never leaves a
checkpoint without its logged epoch or a trial half claimed. The last checkpoint is the
previous epoch's, written atomically; at most the current epoch's work is lost.

The reason recorded (the MLflow run's ``stop_reason`` tag):

* ``user``: SIGINT (Ctrl-C);
* ``time_limit``: SIGUSR1 / SIGUSR2, the warnings ``sbatch --signal`` sends before the time
  limit (submitit's ``USR2``, also when ``scancel --signal=USR2`` sends it early); any other
  stop signal within :data:`TIME_LIMIT_MARGIN` seconds of the job's end
  (``ABLATE_JOB_END_TIME`` set by the launcher, else SLURM's ``SLURM_JOB_END_TIME``);
* ``preempted``: any other stop (a scheduler's or container runtime's SIGTERM, ``scancel``,
  ``scontrol requeue``).

A second signal while a stop is being handled is ignored, so the clean-up (ending the
MLflow run, handing the trial over) finishes.

Python runs a signal handler wherever the main thread is, also inside a garbage-collector
callback or a ``__del__`` (SQLAlchemy's, for one), where an exception is printed as "Exception
ignored" and dropped. A stop lost that way is kept pending (``sys.unraisablehook``) and raised
by the next :func:`check`, which the training loop calls before every step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Iterator

from ablate.exceptions import Stopped

__all__ = ["StopSignals", "critical", "check", "stop_reason", "STOP_SIGNAL_NAMES"]

STOP_SIGNAL_NAMES = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
JOB_END_ENV = "ABLATE_JOB_END_TIME"  # seconds since the epoch when the job is killed
TIME_LIMIT_MARGIN = 300.0  # a stop this close to the job's end is the time limit


# active: nested StopSignals in this process; depth: nested critical sections;
# pending: a Stopped that waits for the critical section to end; stopping: one is handled
_state = SimpleNamespace(active=0, depth=0, pending=None, stopping=False)


def stop_reason(signum: int, now: float | None = None) -> str:
    """``user``, ``time_limit`` or ``preempted`` for a stop signal received now."""
    if signum == signal.SIGINT:
        return "user"
    if signum in {getattr(signal, n, None) for n in ("SIGUSR1", "SIGUSR2")}:
        return "time_limit"  # only a time-limit warning sends these
    now = time.time() if now is None else now
    for name in (JOB_END_ENV, "SLURM_JOB_END_TIME"):
        try:
            end = float(os.environ.get(name, ""))
        except ValueError:
            continue
        return "time_limit" if now >= end - TIME_LIMIT_MARGIN else "preempted"
    return "preempted"


def _handle(signum: int, frame: Any) -> None:
    if _state.stopping:
        return  # the first stop is being handled
    _state.stopping = True
    err = Stopped(stop_reason(signum), signal.Signals(signum).name)
    if _state.depth:
        _state.pending = err
        print(f"ablate: {err}; stopping after the current bookkeeping step", file=sys.stderr,
              flush=True)  # fmt: skip
        return
    raise err


class StopSignals:
    """Turn stop signals into :class:`~ablate.exceptions.Stopped` for the ``with`` block.

    Nested uses are no-ops; outside the main thread nothing is installed.

    Args:
        names: the signals to handle (default: SIGTERM, SIGINT, SIGUSR1, SIGUSR2, where the
            platform has them).
    """

    def __init__(self, names: tuple[str, ...] = STOP_SIGNAL_NAMES):
        self.signals = [getattr(signal, n) for n in names if hasattr(signal, n)]
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if _state.active or threading.current_thread() is not threading.main_thread():
            return self
        _state.stopping, _state.pending, _state.depth = False, None, 0
        for signum in self.signals:
            self.previous[signum] = signal.signal(signum, _handle)
        self._unraisablehook, sys.unraisablehook = sys.unraisablehook, self._keep_lost_stop
        _state.active += 1
        return self

    def _keep_lost_stop(self, unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Stopped) and _state.pending is None:
            _state.pending = unraisable.exc_value  # raised by the next check()
            return
        self._unraisablehook(unraisable)

    def __exit__(self, *exc: Any) -> None:
        if not self.previous:
            return
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()
        sys.unraisablehook = self._unraisablehook
        _state.active -= 1
        _state.stopping, _state.pending = False, None


@contextmanager
def critical(raise_pending: bool = True) -> Iterator[None]:
    """A stop signal received inside the block takes effect when the block ends.

    Args:
        raise_pending: False: the stop stays pending until the next :func:`check` or
            critical section (the caller must reach one soon, e.g. a worker that has just
            claimed a trial hands it over at once).
    """
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if raise_pending and _state.depth == 0:
            check()


def check() -> None:
    """Raise the stop that arrived during a critical section, if any."""
    if _state.pending is not None and _state.depth == 0:
        err, _state.pending = _state.pending, None
        raise err
