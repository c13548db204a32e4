"""The `ablate compare` subcommand: options and the command (loaded by ``ablate.cli``)."""

from __future__ import annotations

import argparse

from ablate.compare.core import compare_runs
from ablate.compare.endpoints import BASE_METRICS, CHECKPOINTS
from ablate.compare.grouping import RUN_LOCAL_KEYS
from ablate.compare.render import format_report
from ablate.compare.select import DEFAULT_EXPERIMENT
from ablate.compare.stats import BOOTSTRAP_MIN_N, PAIRING_CHOICES
from ablate.compare.summary import DEFAULT_BASELINE

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
        help="report the epochs runs needed to reach this validation value; auto: the worst "
        "group's mean final value (every group reaches it on average); none: off "
        "(default: auto)",
    )
    parser.add_argument(
        "--out",
        "--output",
        dest="out",
        metavar="DIR",
        default="./compare",
        help="directory for figures (PNG) and tables (CSV, Markdown) (default: ./compare)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
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
        help="also compare pruned study trials (their last value is at the pruned epoch)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        metavar="N",
        default=10_000,
        help="bootstrap resamples for P(better) and, from "
        f"{BOOTSTRAP_MIN_N} runs per group, the BCa interval of the difference; 0: none "
        "(default: 10000)",
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
        help="write the tables only, no PNG figures",
    )


def command(args: argparse.Namespace) -> int:
    """Compare groups of runs: end points, learning curves and differences with 95% CIs.

    Reads runs from MLflow, groups them (refusing to pool runs whose configs differ in more
    than the seed), prints the end point per group and which model it came from, the
    difference from the baseline with a paired or Welch t-test (Holm-corrected), P(better),
    the minimal detectable difference, and the area under the validation curve; writes
    figures and tables to --out.
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
        n_boot=args.bootstrap,
        seed=args.bootstrap_seed,
        plots=not args.no_plots,
    )
    print(format_report(result))
    return 0
