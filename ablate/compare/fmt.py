"""Number formats shared by the printed tables (:mod:`.render`, :mod:`.dose`)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["num", "p_text", "interval", "UNDEFINED"]

UNDEFINED = "no spread: undefined"  # an interval that cannot be computed, never zero-width


def num(x: Any, signed: bool = False) -> str:
    """4 decimals (1 from 100 up); ``nan`` for a missing number."""
    if x is None or not math.isfinite(x):
        return "nan"
    digits = 4 if abs(x) < 100 else 1
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def p_text(p: float) -> str:
    """A p-value; ``-`` when there is none."""
    if not math.isfinite(p):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def interval(low: float, high: float, signed: bool = False) -> str:
    """``[low, high]``; ``-`` when either end is missing."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{num(low, signed)}, {num(high, signed)}]"
