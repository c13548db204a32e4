"""Alpha schedules: the value of a variant parameter at every optimizer step.

The training loop calls ``schedule(step)`` before optimizer step ``step`` (0, 1, 2, ...).
Convention: a schedule of ``steps`` steps anneals over the window ``0 .. steps - 1``: step 0
trains at ``start`` and the LAST step of the window, ``steps - 1``, trains at ``end``. So
``steps`` = the run's total optimizer steps means the final optimizer step trains at
``end``, and ``steps = k * steps_per_epoch`` means alpha reaches ``end`` on the last step of
epoch k. A one-step window is at ``end`` from step 0.

After the window, ``hold=True`` keeps ``end``; ``hold=False`` repeats the window (a
sawtooth of period ``steps``: each cycle reaches ``end`` on its last step, the next step
starts again at ``start``).

Shapes of the built-ins, with p = step / (steps - 1), clipped to [0, 1]:

- ``constant``: ``end`` throughout; ``start`` is ignored (the value the run is "about").
- ``linear``: start + (end - start) * p
- ``cosine``: start + (end - start) * (1 - cos(pi p)) / 2   (slow, fast, slow)
- ``step``: ``levels`` equal jumps, i.e. levels + 1 plateaus start, ..., end, each held for
  the same number of steps (steps / (levels + 1), give or take one), the last included.

A new shape is one decorated function ``shape(p, levels) -> fraction of the way from start to
end`` (it should return 1 at p = 1 so that the window ends at ``end``), in any module that is
imported, or in another package through the ``ablate.schedules`` entry-point group
(``my_shape = my_pkg.schedules:my_shape``); ``list_schedules()`` lists them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from variants import Registry

__all__ = ["AlphaSchedule", "SCHEDULES", "ENTRY_POINT_GROUP", "ScheduleShape", "register_schedule",
           "get_schedule", "list_schedules"]  # fmt: skip

ENTRY_POINT_GROUP = "ablate.schedules"

# shape(p, levels) -> fraction of the way from start to end, p in [0, 1]
ScheduleShape = Callable[[float, int], float]


def _adopt(ep: Any, fn: ScheduleShape) -> None:
    register_schedule(ep.name)(fn)  # a plain function, under its entry point's name


SCHEDULES: Registry[ScheduleShape] = Registry(
    "alpha schedule", "schedules", ENTRY_POINT_GROUP, _adopt
)


def register_schedule(name: str | None = None) -> Callable[[ScheduleShape], ScheduleShape]:
    """Decorator that registers a shape as ``--alpha-schedule name`` (default: its __name__)."""

    def decorator(fn: ScheduleShape) -> ScheduleShape:
        SCHEDULES.add(name or fn.__name__, fn)
        return fn

    return decorator


def list_schedules(pattern: str = "*") -> list[str]:
    """Names of all registered schedules (entry points included) matching ``pattern``, sorted."""
    return SCHEDULES.names(pattern)


def get_schedule(name: str) -> ScheduleShape:
    """The shape registered as ``name``; unknown names raise ValueError listing the valid ones."""
    return SCHEDULES.get(name)


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
    # levels + 1 plateaus over p in [0, 1]: plateau i covers p in [i, i+1) / (levels + 1),
    # and p = 1 (the window's last step) belongs to the last one. With p = step / (steps - 1)
    # every plateau gets the same number of steps, give or take one.
    # (The 1e-9 keeps a boundary that is an exact integer in reals from rounding down.)
    return min(math.floor(p * (levels + 1) + 1e-9), levels) / levels


@dataclass(frozen=True)
class AlphaSchedule:
    """``schedule(step) -> alpha`` before optimizer step ``step`` (see the module docstring).

    Built once per run (by :func:`ablate.trial.resolve.resolve`), before the data is loaded: a
    window given in epochs (``epochs``) becomes steps with :meth:`sized` once the number of
    optimizer steps per epoch is known. The shape function is looked up once, here.

    Args:
        kind: a registered schedule name (``list_schedules()``).
        start: alpha at step 0 (ignored by ``constant``).
        end: alpha at step ``steps - 1`` and, with ``hold``, after it.
        steps: length of the annealing window in optimizer steps (>= 1); None when the
            window is given in ``epochs``.
        levels: number of equal jumps of the ``step`` schedule (>= 1).
        hold: keep ``end`` after the window; False repeats the window (sawtooth).
        epochs: the window in epochs (``steps`` None): ``sized(n)`` makes it
            ``max(1, round(epochs * n))`` steps.
    """

    kind: str
    start: float
    end: float
    steps: int | None
    levels: int = 4
    hold: bool = True
    epochs: float | None = None
    shape: ScheduleShape = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # unknown names raise, listing the valid ones
        object.__setattr__(self, "shape", get_schedule(self.kind))
        if self.steps is None and self.epochs is None:
            raise ValueError("alpha schedule needs a window: steps or epochs")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"alpha schedule needs at least 1 step, got {self.steps}")
        if self.levels < 1:
            raise ValueError(f"alpha_levels must be >= 1, got {self.levels}")

    def sized(self, steps_per_epoch: int) -> "AlphaSchedule":
        """This schedule with its window in optimizer steps (itself when already in steps)."""
        if self.steps is not None:
            return self
        steps = max(1, round(self.epochs * steps_per_epoch))  # type: ignore[operator]
        return replace(self, steps=steps, epochs=None)

    def __call__(self, step: int) -> float:
        if self.steps is None:
            raise ValueError("this alpha schedule's window is in epochs; call sized() first")
        step = max(step, 0)
        if not self.hold:
            step %= self.steps
        p = 1.0 if self.steps == 1 else min(step / (self.steps - 1), 1.0)
        f = self.shape(p, self.levels)
        # Interpolated this way both ends are exact: f = 0 gives start, f = 1 gives end.
        return self.start * (1.0 - f) + self.end * f

    # The shape is a function (maybe from a user's file): pickle the name, look it up again.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "shape"}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "shape", get_schedule(self.kind))
