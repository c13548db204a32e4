"""The `ablate compare` subcommand: options and the command (loaded by ``ablate.cli``)."""

from __future__ import annotations

import argparse

from ablate.cli_options import add_tracking_uri
from ablate.compare.core import FORMATS, compare_runs
from ablate.compare.endpoints import BASE_METRICS, CHECKPOINTS
from ablate.compare.grouping import RUN_LOCAL_KEYS
from ablate.compare.intervals import BOOTSTRAP_MIN_N
from ablate.compare.render import format_report, to_json
from ablate.compare.select import DEFAULT_EXPERIMENT
from ablate.compare.stats import PAIRING_CHOICES
from ablate.compare.summary import DEFAULT_BASELINE
from ablate.compare.units import REPEATS

__all__ = ["add_arguments", "command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ablate compare`."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--experiment",
        metavar="NAME",
        default=None,
        help=f"MLflow experiment whose runs are compared (default: {DEFAULT_EXPERIMENT})",
    )
    source.add_argument(
        "--study",
        metavar="NAME",
        default=None,
        help="compare the trial runs of this Optuna study (across experiments); figures and "
        "tables are also logged to the study's parent run under compare/",
    )
    parser.add_argument(
        "--filter",
        metavar="EXPR",
        default=None,
        help="MLflow search filter, e.g. \"tags.dataset = 'digits' and params.epochs = '30'\"",
    )
    parser.add_argument(
        "--group-by",
        metavar="KEYS",
        default=None,
        help="comma-separated tag or param names that define a group, looked up in tags "
        "first, then params (default: every config key that varies across the runs, seed "
        "excepted); runs in one group may differ only by seed and --pool-over keys",
    )
    parser.add_argument(
        "--pool-over",
        metavar="KEYS",
        default=None,
        help="config keys allowed to vary inside a group, e.g. lr,epochs (default: only "
        f"seed; ignored anyway: {', '.join(sorted(RUN_LOCAL_KEYS))})",
    )
    parser.add_argument(
        "--metric",
        default="acc",
        help=f"end point compared: {', '.join(BASE_METRICS)} (the final model's test number "
        "when every run has one, else the last validation epoch), or val_acc, test_f1, "
        "best_test_acc, ... or any logged metric key (default: acc)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        default=None,
        help="which weights the end point measures: final (end of the schedule, default) or "
        "best (the best-validation checkpoint, chosen on val_acc over epochs >= 1)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GROUP",
        default=None,
        help=f"group the others are compared with (default: {DEFAULT_BASELINE} when present)",
    )
    parser.add_argument(
        "--pairing",
        choices=PAIRING_CHOICES,
        default="auto",
        help="auto: paired t-test on per-seed differences when a group has exactly the "
        "baseline's seeds (same split, init and data order), Welch's t-test otherwise; "
        "paired: pair the runs whose seeds match; welch: never pair (default: auto)",
    )
    parser.add_argument(
        "--target",
        metavar="VALUE",
        default="auto",
        help="report the epochs (>= 1) runs needed to reach this validation value; auto: the "
        "worst group's mean value at the last common epoch, rounded down (every group reaches "
        "it on average); none: off (default: auto)",
    )
    parser.add_argument(
        "--x",
        metavar="PARAM",
        default=None,
        help="dose-response: tabulate and plot the end point against this numeric variant "
        "parameter (tag variant.PARAM) or config key, e.g. alpha: one row per level, the "
        "difference from --baseline-x and a trend test (slope, seeds as blocks)",
    )
    parser.add_argument(
        "--baseline-x",
        metavar="VALUE",
        default=None,
        help="with --x: the level the others are compared with (default: the lowest)",
    )
    parser.add_argument(
        "--out",
        dest="out",
        metavar="DIR",
        default="./compare",
        help="directory for figures and tables (CSV, Markdown) (default: ./compare)",
    )
    parser.add_argument(
        "--output",
        choices=("table", "json"),
        default="table",
        help="what is printed: aligned tables, or JSON (as in the other commands) "
        "(default: table)",
    )
    parser.add_argument(
        "--format",
        metavar="LIST",
        default="png",
        help=f"figure formats, comma-separated from {', '.join(FORMATS)}; PNG is written "
        "at 300 dpi (default: png)",
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--mode",
        choices=("max", "min"),
        default=None,
        help="whether higher (max) or lower (min) is better; default: max for "
        "accuracy/f1/precision/recall, min for losses",
    )
    parser.add_argument(
        "--include-pruned",
        action="store_true",
        help="partial look: also include pruned study trials; every end point is then the "
        "validation value at the last epoch every run reached (labelled)",
    )
    parser.add_argument(
        "--include-running",
        action="store_true",
        help="partial look: also include RUNNING runs (left out and counted by default); "
        "every end point is then the validation value at the last epoch every run "
        "reached (labelled)",
    )
    parser.add_argument(
        "--repeats",
        choices=REPEATS,
        default="mean",
        help="a seed run more than once in a group is one unit: the mean of its runs, or "
        "its latest run (default: mean)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        metavar="N",
        default=10_000,
        help=f"BCa bootstrap resamples for the interval of the difference, shown for "
        f"unpaired groups from {BOOTSTRAP_MIN_N} seeds each, where it covers its 95%%; "
        "0: none (default: 10000)",
    )
    parser.add_argument(
        "--bootstrap-seed",
        type=int,
        metavar="SEED",
        default=0,
        help="seed of the bootstrap's random generator (default: 0)",
    )
    parser.add_argument(
        "--no-plots",
        action="store_true",
        help="write the tables only, no figures",
    )


def command(args: argparse.Namespace) -> int:
    """Compare groups of runs: end points, learning curves and differences with 95% CIs.

    Reads runs from MLflow, groups them (refusing to pool runs whose configs differ in more
    than the seed), prints the end point per group, which model it came from and how many
    runs each group lost, the difference from the baseline with a paired or Welch t-test
    (one Holm family with the curve comparisons), P(better), the minimal detectable
    difference, and the area under the validation curve over the epochs every run has;
    with --x, the end point against a numeric parameter; writes figures and tables to --out.
    """
    result = compare_runs(
        experiment=args.experiment,
        study=args.study,
        filter_string=args.filter,
        group_by=args.group_by,
        pool_over=args.pool_over,
        metric=args.metric,
        checkpoint=args.checkpoint,
        baseline=args.baseline,
        target=args.target,
        pairing=args.pairing,
        out_dir=args.out,
        tracking_uri=args.tracking_uri,
        mode=args.mode,
        include_pruned=args.include_pruned,
        include_running=args.include_running,
        repeats=args.repeats,
        x=args.x,
        baseline_x=args.baseline_x,
        n_boot=args.bootstrap,
        seed=args.bootstrap_seed,
        plots=not args.no_plots,
        formats=args.format,
    )
    print(to_json(result) if args.output == "json" else format_report(result))
    return 0
