"""``alpha=learned``: the variant-string form of a trainable alpha, parsed (pure data).

    softmax_v:alpha=learned
    alpha_remix:alpha=learned,beta=1,alpha_shape=head,alpha_init=0.25,alpha_range=[-1,1]

``alpha=learned`` makes the variant's ``alpha`` a trainable parameter of every site that
runs the variant, instead of a fixed (or scheduled) buffer. Its options:

- ``alpha_shape``: ``layer`` (one alpha per attention site, the default) or ``head`` (one
  per head of every site);
- ``alpha_init``: the value training starts from, reached exactly (default 0: standard
  attention for softmax_v, alpha_remix and laser_remix);
- ``alpha_range``: ``[lo,hi]`` squashes alpha into that interval (smoothly; see
  :mod:`ablate.models.learned_alpha`); ``alpha_init`` must lie strictly inside it.

The options are only valid together with ``alpha=learned``. The parameter itself (a torch
module) lives in :mod:`ablate.models.learned_alpha`; this module only parses and prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LearnedAlpha", "split_items", "number", "ALPHA_SHAPES", "LEARNED_KEYS"]

ALPHA_SHAPES = ("layer", "head")
LEARNED_KEYS = ("alpha_shape", "alpha_init", "alpha_range")


@dataclass(frozen=True)
class LearnedAlpha:
    """A trainable alpha: its shape, start value and optional range (lo, hi)."""

    shape: str = "layer"
    init: float = 0.0
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.shape not in ALPHA_SHAPES:
            raise ValueError(f"alpha_shape {self.shape!r} is not valid; choose one of "
                             f"{', '.join(ALPHA_SHAPES)}")
        if not math.isfinite(self.init):
            raise ValueError(f"alpha_init must be a finite number, got {self.init}")
        if self.range is not None:
            lo, hi = self.range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"alpha_range must be [lo,hi] with lo < hi, got [{lo:g},{hi:g}]")
            if not lo < self.init < hi:
                raise ValueError(f"alpha_init {self.init:g} must lie strictly inside alpha_range "
                                 f"[{lo:g},{hi:g}] (the squashed alpha never reaches its ends)")

    @classmethod
    def from_items(cls, found: dict[str, str], text: str) -> "LearnedAlpha | None":
        """From the ``alpha=learned`` items of a variant string (``{"alpha_shape": "head"}``,
        ...); None when there are none. ``text`` is the whole string, for errors."""
        if not found:
            return None
        if found.get("alpha") != "learned":
            raise ValueError(f"{', '.join(sorted(found))} in {text!r} only go with alpha=learned "
                             "(e.g. softmax_v:alpha=learned,alpha_shape=head)")
        options: dict = {}
        if "alpha_shape" in found:
            options["shape"] = found["alpha_shape"]
        if "alpha_init" in found:
            options["init"] = number("alpha_init", found["alpha_init"])
        if "alpha_range" in found:
            raw = found["alpha_range"]
            parts = split_items(raw[1:-1]) if raw.startswith("[") and raw.endswith("]") else []
            if len(parts) != 2:
                raise ValueError(f"alpha_range must look like [lo,hi], got {raw!r} in {text!r}")
            options["range"] = (number("alpha_range", parts[0]), number("alpha_range", parts[1]))
        return cls(**options)

    def __str__(self) -> str:
        """The variant-string items, e.g. ``alpha=learned,alpha_shape=head``."""
        items = ["alpha=learned"]
        if self.shape != "layer":
            items.append(f"alpha_shape={self.shape}")
        if self.init != 0.0:
            items.append(f"alpha_init={self.init:g}")
        if self.range is not None:
            items.append(f"alpha_range=[{self.range[0]:g},{self.range[1]:g}]")
        return ",".join(items)


def split_items(rest: str) -> list[str]:
    """``a=1,b=[2,3]`` -> ``["a=1", "b=[2,3]"]``: commas inside brackets do not split."""
    items, depth, current = [], 0, []
    for char in rest:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item for item in items if item.strip()]


def number(key: str, value: str) -> float:
    """``value`` as a float; the error names the parameter."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"variant parameter {key!r} must be a number, got {value!r}") from None
