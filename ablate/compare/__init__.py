"""`ablate compare`: learning curves and significance tables across groups of MLflow runs.

Modules by concern: :mod:`.select` (reading runs from MLflow), :mod:`.grouping` (which runs
may be pooled; runs lost per group), :mod:`.endpoints` (the number per run, the model it
came from, one unit per seed), :mod:`.stats` and :mod:`.intervals` (tests and intervals on
plain numbers), :mod:`.curves` (per-epoch curves), :mod:`.summary` (the per-group table, one
Holm family), :mod:`.dose` (``--x``), :mod:`.notes`, :mod:`.render` (text), :mod:`.files` and
:mod:`.plots` (CSV, Markdown, figures), :mod:`.core` (end to end, :class:`CompareOptions`);
the subcommand's flags are generated here from :class:`CompareOptions`. Heavy libraries
(mlflow, pandas, scipy, matplotlib) are imported inside functions, so importing this
package stays light.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from ablate.cli_options import add_dataclass_options, add_output, add_tracking_uri
from ablate.compare.core import CompareOptions, compare_runs
from ablate.compare.render import format_report, to_json
from ablate.compare.result import ComparisonResult

__all__ = ["add_arguments", "command", "compare_runs", "CompareOptions", "ComparisonResult",
           "format_report"]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ablate compare`: one flag per field of :class:`CompareOptions`."""
    source = parser.add_mutually_exclusive_group()
    for name in ("experiment", "study"):
        meta = next(f.metadata for f in fields(CompareOptions) if f.name == name)
        source.add_argument(f"--{name}", metavar=meta["metavar"], help=meta["help"])
    add_dataclass_options(parser, CompareOptions, skip=("experiment", "study"))
    add_output(parser)
    add_tracking_uri(parser)


def command(args: argparse.Namespace) -> int:
    """Compare groups of runs: end points, learning curves and differences with 95% CIs.

    Reads runs from MLflow, groups them (refusing to pool runs whose configs differ in more
    than the seed), prints the end point per group, the model it came from and the runs
    each group lost, the difference from the baseline with its test (one Holm family with
    the curve comparisons), P(better), the minimal detectable difference, and the area
    under the validation curve over the epochs every compared run has; with --x, the end
    point against a numeric parameter; writes figures and tables to --out.
    """
    result = compare_runs(**{f.name: getattr(args, f.name) for f in fields(CompareOptions)})
    print(to_json(result) if args.output == "json" else format_report(result))
    return 0
