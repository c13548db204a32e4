"""The public entry points for running from Python: ``train(cfg)``.

``train`` is ``resolve`` then ``run_trial``; it lives here, above both, so that the
training loop (:mod:`ablate.train`) never imports the runner that drives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.config import RunConfig
    from ablate.trial import RunResult

__all__ = ["train"]


def train(cfg: "RunConfig", **kwargs: Any) -> "RunResult":
    """Resolve ``cfg`` and run it as one trial.

    Args:
        cfg: the run configuration.
        kwargs: passed to :func:`ablate.trial.run_trial` (``on_epoch``, ``parent_run_id``,
            ``extra_tags``, ``run_name``, ``resume_run_id``, ``on_run_open``).
    """
    from ablate.resolve import resolve
    from ablate.trial import run_trial

    return run_trial(resolve(cfg), **kwargs)
