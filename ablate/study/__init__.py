"""`ablate study FILE`: an ablation declared in a study file, scheduled by Optuna.

Every trial is one ``run_trial`` call and one MLflow run, nested under the study's parent
run. Grid cells (e.g. variant x apply_to x seed) each finish exactly once, also with several
worker processes (``--workers N``) or machines (``--storage postgresql://...``, every
machine runs the same command), and when workers crash: a killed trial is marked failed
and retried, resuming its MLflow run from its last checkpoint. Search spaces are sampled
with TPE or random search, optionally pruned (median / hyperband) on the validation curve.

Modules: :mod:`~ablate.study.spec` (study files), :mod:`~ablate.study.storage` (Optuna
storage, study lock, heartbeats), :mod:`~ablate.study.parent` (study and parent run),
:mod:`~ablate.study.worker` (claiming and running trials), :mod:`~ablate.study.sampling`
(sampler, pruner, suggested parameters), :mod:`~ablate.study.recovery`
(dead workers, retries), :mod:`~ablate.study.supervisor` (the command: devices, worker
processes, signals), :mod:`~ablate.study.report` (dry run, progress, summary),
:mod:`~ablate.study.state` (reading trial states), :mod:`~ablate.study.common` (settings).
This module stays import-light: optuna, mlflow, torch and pydantic load only when a
command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ablate.cli_options import add_tracking_uri

__all__ = ["add_arguments", "command", "load_study", "run_study", "StudyPlan", "StudyOutcome"]


def __getattr__(name: str) -> Any:
    if name in ("load_study", "StudyPlan"):
        from ablate.study import spec

        return getattr(spec, name)
    if name == "run_study":
        from ablate.study.supervisor import run_study

        return run_study
    if name == "StudyOutcome":
        from ablate.study.common import StudyOutcome

        return StudyOutcome
    raise AttributeError(f"module 'ablate.study' has no attribute {name!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="study file (YAML), e.g. studies/quick.yaml")
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="run at most N trials in this command (all workers together); the study's total "
        "is one trial per grid cell, or the file's n_trials",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="start no new trial after S seconds (default: the file's timeout); running "
        "trials finish",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes on this machine (default: --workers-per-device per device, "
        "i.e. 1 without GPUs); other machines join by running the same command with the same "
        "--storage",
    )
    parser.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="devices the workers take round-robin, e.g. cuda:0,cuda:1 (default: every visible "
        "GPU; without GPUs the study file's device)",
    )
    parser.add_argument(
        "--workers-per-device",
        type=int,
        default=1,
        metavar="K",
        help="trials sharing each device at once when --workers is not given (default: 1)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna storage (default: the file's storage, else sqlite:///ablate-optuna.db here); "
        "postgresql://USER@HOST/DB or mysql://... for many machines",
    )
    add_tracking_uri(parser, first="the file's base.tracking_uri")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the resolved trials and exit without running"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no per-trial lines; only the summary",
    )
    from ablate.study.launcher import add_arguments as add_launcher_arguments

    add_launcher_arguments(parser)  # --launcher slurm|local, --array N, --slurm-*, --status


def command(args: argparse.Namespace) -> int:
    """Validate the study file, then dry-run it or run it; 0 = done, 1 = cells failed for good."""
    from ablate.exceptions import AblateError, ConfigError
    from ablate.study.report import format_plan
    from ablate.study.spec import load_study
    from ablate.study.storage import resolve_storage_url
    from ablate.study.supervisor import run_study
    from ablate.tracking import resolve_tracking_uri

    for flag, value, low in (
        ("--trials", args.trials, 1),
        ("--workers", args.workers, 1),
        ("--workers-per-device", args.workers_per_device, 1),
    ):
        if value is not None and value < low:
            raise ConfigError(f"{flag}: must be >= {low}, got {value}")
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout: must be > 0 seconds, got {args.timeout:g}")
    plan = load_study(args.file)
    try:
        storage = resolve_storage_url(args.storage or plan.spec.storage)
    except ConfigError as err:
        where = "--storage" if args.storage else f"{plan.path}: storage"
        raise ConfigError(f"{where}: {err}") from None
    tracking_uri = resolve_tracking_uri(args.tracking_uri or plan.base.get("tracking_uri"))
    from ablate.study.launcher import launch_command, launcher_flags

    if args.status or args.launcher or launcher_flags(args):

        outcome = launch_command(args, plan, storage, tracking_uri)
        if outcome is None:  # --status, submitted without --wait, or --dry-run
            return 0
    elif args.dry_run:
        print(
            format_plan(
                plan,
                storage=storage,
                tracking_uri=tracking_uri,
                max_trials=args.trials,
                timeout=args.timeout if args.timeout is not None else plan.spec.timeout,
                workers=args.workers or args.workers_per_device,
            )
        )
        return 0
    else:
        outcome = run_study(
            plan,
            storage=storage,
            tracking_uri=tracking_uri,
            workers=args.workers,
            devices=args.devices,
            workers_per_device=args.workers_per_device,
            max_trials=args.trials,
            timeout=args.timeout,
            quiet=args.quiet,
        )
    print(outcome.table)
    if not outcome.complete:
        state = "incomplete (run the same command again to continue)"
    elif outcome.exhausted:
        state = (
            f"finished, but {len(outcome.exhausted)} cells failed {1 + plan.spec.max_retries} "
            "times and "
            "were given up (raise max_retries in the study file and rerun to try them again)"
        )
    else:
        state = "complete"
    print(
        f"study {outcome.name!r}: {state}; {outcome.trials_run} trials run now; "
        f"storage {outcome.storage}; "
        f"MLflow parent run {outcome.parent_run_id} at {outcome.tracking_uri} "
        f"(compare with: ablate compare --study {outcome.name} "
        f"--tracking-uri {outcome.tracking_uri})"
    )
    _print_ui_url(tracking_uri, outcome.parent_run_id)
    sys.stdout.flush()
    if outcome.errors:
        raise AblateError(outcome.errors[0])
    return 1 if outcome.exhausted else 0


def _print_ui_url(tracking_uri: str, parent_run_id: str) -> None:
    """The parent run's page in the MLflow UI's model-training view (``ablate ui``)."""
    from ablate.ui import url_of_run

    print(f"parent run in the MLflow UI (ablate ui): {url_of_run(tracking_uri, parent_run_id)}")
