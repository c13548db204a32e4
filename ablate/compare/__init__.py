"""`ablate compare`: learning curves and significance tables across groups of MLflow runs.

Modules by concern: :mod:`.select` (reading runs from MLflow), :mod:`.grouping` (which runs
may be pooled; runs lost per group), :mod:`.endpoints` (the number per run, the model it
came from, one unit per seed), :mod:`.stats` and :mod:`.intervals` (tests and intervals on
plain numbers), :mod:`.curves` (per-epoch curves), :mod:`.summary` (the per-group table, one
Holm family), :mod:`.dose` (``--x``), :mod:`.notes`, :mod:`.render` (text), :mod:`.files` and
:mod:`.plots` (CSV, Markdown, figures), :mod:`.core` (end to end, :class:`CompareOptions`)
and :mod:`.cli`. Heavy libraries (mlflow, pandas, scipy, matplotlib) are imported inside
functions, so importing this package stays light.
"""

from __future__ import annotations

from ablate.compare.cli import add_arguments, command
from ablate.compare.core import CompareOptions, compare_runs
from ablate.compare.render import format_report
from ablate.compare.result import ComparisonResult

__all__ = [
    "add_arguments",
    "command",
    "compare_runs",
    "CompareOptions",
    "ComparisonResult",
    "format_report",
]
