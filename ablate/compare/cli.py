"""The `ablate compare` subcommand: its flags, generated from :class:`CompareOptions`."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ablate.cli_options import add_dataclass_options, add_output, add_tracking_uri
from ablate.compare.core import CompareOptions, compare_runs
from ablate.compare.render import format_report, to_json

__all__ = ["add_arguments", "command"]


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
