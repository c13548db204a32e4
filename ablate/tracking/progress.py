"""Epoch progress for a terminal (a tqdm bar) or a log file (plain lines).

A carriage-return bar is for terminals: in a SLURM log or a CI log it leaves hundreds of
overwritten bar states on one line. :func:`epoch_progress` returns a tqdm bar when stdout and
stderr are terminals, otherwise a :class:`LineProgress` that prints one plain line per epoch
(or at most one per ``ABLATE_PROGRESS_EVERY`` seconds; the last epoch always prints)::

    epoch 3/8  loss 0.532  val_acc 0.812  (4.1 s/epoch)

Both offer what :func:`ablate.trial.loop.fit` calls: ``update(n)``, ``set_postfix(**fields)``
and ``close()``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["epoch_progress", "LineProgress", "is_interactive"]

EVERY_ENV = "ABLATE_PROGRESS_EVERY"  # seconds between plain lines (default 0: every epoch)


def is_interactive() -> bool:
    """True when both output streams are terminals (not a log file, pipe or CI)."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def epoch_progress(total: int, initial: int = 0, *, desc: str | None = None) -> Any:
    """A progress display over ``total`` epochs, ``initial`` of them already done (resume)."""
    if is_interactive():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="epoch", dynamic_ncols=True)
    try:
        every = float(os.environ.get(EVERY_ENV, "0") or 0)
    except ValueError:
        every = 0.0
    return LineProgress(total, initial, desc=desc, every=every)


class LineProgress:
    """One plain line per epoch (or per ``every`` seconds) on ``stream`` (default stderr).

    Args:
        total: epochs in the run.
        initial: epochs done before this process started (a resumed run).
        desc: a prefix naming the run.
        every: print at most one line per this many seconds (0: every epoch).
        stream: where the lines go (default: ``sys.stderr``, as tqdm).
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        desc: str | None = None,
        every: float = 0.0,
        stream: TextIO | None = None,
    ):
        self.total = total
        self.n = initial
        self.desc = desc
        self.every = every
        self.stream = stream
        self._fields: dict[str, Any] = {}
        self._pending = False
        self._started = time.perf_counter()
        self._done_here = 0  # epochs finished by this process (for the rate)
        self._last_print = float("-inf")

    def update(self, n: int = 1) -> None:
        self._flush()  # an epoch that never got its fields
        self.n += n
        self._done_here += n
        self._pending = True

    def set_postfix(self, **fields: Any) -> None:
        self._fields = fields
        self._flush()

    def close(self) -> None:
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        if not self._pending:
            return
        now = time.perf_counter()
        if not force and self.n < self.total and now - self._last_print < self.every:
            return
        self._pending = False
        self._last_print = now
        parts = [f"{self.desc}: " if self.desc else "", f"epoch {self.n}/{self.total}"]
        parts += [f"  {key} {value}" for key, value in self._fields.items()]
        if self._done_here:
            parts.append(f"  ({(now - self._started) / self._done_here:.1f} s/epoch)")
        print("".join(parts), file=self.stream or sys.stderr, flush=True)
