"""Alpha schedules: the value of a variant parameter at every optimizer step.

A schedule moves ``alpha`` from ``start`` (step 0) to ``end`` (step ``steps``), evaluated
before every optimizer step, so fine-tuning can begin exactly as standard attention
(alpha = 0 with ``softmax_v``) and deform toward softmax^T(V). After ``steps`` the value
holds at ``end`` (``hold=True``) or the schedule starts over (``hold=False``).

Shapes of the built-ins, with p = min(step / steps, 1):

- ``constant``: ``end`` throughout (the value the run is "about"; start is ignored).
- ``linear``: start + (end - start) * p
- ``cosine``: start + (end - start) * (1 - cos(pi p)) / 2   (slow, fast, slow)
- ``step``: start + (end - start) * floor(p * levels) / levels   (``levels`` equal jumps)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

__all__ = ["AlphaSchedule", "SCHEDULES", "register_schedule"]

# shape(p, levels) -> fraction of the way from start to end, p in [0, 1]
SCHEDULES: dict[str, Callable[[float, int], float]] = {}


def register_schedule(name: str) -> Callable:
    def decorator(fn: Callable[[float, int], float]) -> Callable[[float, int], float]:
        SCHEDULES[name] = fn
        return fn

    return decorator


@register_schedule("constant")
def _constant(p: float, levels: int) -> float:
    return 1.0


@register_schedule("linear")
def _linear(p: float, levels: int) -> float:
    return p


@register_schedule("cosine")
def _cosine(p: float, levels: int) -> float:
    return (1.0 - math.cos(math.pi * p)) / 2.0


@register_schedule("step")
def _step(p: float, levels: int) -> float:
    return math.floor(p * levels + 1e-12) / levels


@dataclass(frozen=True)
class AlphaSchedule:
    """``schedule(step) -> alpha`` for a run of ``steps`` annealing steps."""

    kind: str
    start: float
    end: float
    steps: int
    levels: int = 4
    hold: bool = True

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(
                f"unknown alpha schedule {self.kind!r}; valid schedules: {', '.join(SCHEDULES)}"
            )
        if self.steps < 1:
            raise ValueError(f"alpha schedule needs at least 1 step, got {self.steps}")
        if self.levels < 1:
            raise ValueError(f"alpha_levels must be >= 1, got {self.levels}")

    def __call__(self, step: int) -> float:
        if not self.hold and step >= self.steps:
            step = step % self.steps
        p = min(max(step, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * SCHEDULES[self.kind](p, self.levels)
