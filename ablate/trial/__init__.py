"""One trial: resolve -> build -> fit -> test, recorded by :class:`ablate.tracking.Recorder`.

- :mod:`.resolve`: strings of a :class:`~ablate.config.RunConfig` become objects, once;
- :mod:`.run`: :func:`run_trial`, the one runner behind ``ablate run``, ``ablate finetune``
  and every study worker;
- :mod:`.loop`: the training loop (AdamW, warm-up + cosine, EMA, the alpha schedule);
- :mod:`.schedules`: alpha schedules; :mod:`.stopping`: stop signals between steps.

Light to import: torch, MLflow and the data load only when a trial runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "run_trial", "RunResult", "resolve", "check", "ResolvedRun"]


def __getattr__(name: str) -> Any:
    if name in ("train", "run_trial", "RunResult"):
        from ablate.trial import run

        return getattr(run, name)
    if name in ("resolve", "check", "ResolvedRun"):
        from ablate.trial import resolve

        return getattr(resolve, name)
    raise AttributeError(f"module 'ablate.trial' has no attribute {name!r}")
