""":func:`owned_run`: the one place a trial's MLflow run ends."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ablate.tracking import conventions as cv
from ablate.tracking.tracker import Tracker

__all__ = ["owned_run"]


@contextmanager
def owned_run(tracker: Tracker, resume_hint: str | None = None) -> Iterator[Tracker]:
    """Own ``tracker``'s run until the block ends, and end it with the status the block earned.

    The one place a trial's MLflow run is ended: FINISHED when the block completes;
    KILLED with ``trial_state=PRUNED`` when it raises :class:`~ablate.exceptions.Pruned`;
    KILLED with ``stop_reason`` (preempted, time_limit, user) and a reason on Ctrl-C /
    SIGTERM; FAILED with the error as ``failure_reason``
    otherwise. The exception always propagates.

    Args:
        tracker: an open run (:meth:`Tracker.start` or :meth:`Tracker.attach`).
        resume_hint: the command that would continue the run, added to an interruption.
    """
    from ablate.exceptions import Pruned

    try:
        yield tracker
    except Pruned:
        tracker.set_trial_state("PRUNED")
        tracker.end(cv.KILLED)
        raise
    except KeyboardInterrupt as err:  # Ctrl-C, or a stop signal (ablate.exceptions.Stopped)
        message = (str(err) or "interrupted") + (
            f" (resume with: {resume_hint})" if resume_hint else ""
        )
        tracker.stop(getattr(err, "reason", "user"), message)
        raise
    except BaseException as err:
        reason = str(err) if _is_user_facing(err) else f"{type(err).__name__}: {err}"
        tracker.end(cv.FAILED, reason)
        raise
    else:
        tracker.end(cv.FINISHED)


def _is_user_facing(err: BaseException) -> bool:
    from ablate.exceptions import AblateError

    return isinstance(err, AblateError)
