"""`ablate study FILE [KEY=VALUE ...]`: an ablation declared in a study file, run by Optuna.

Every trial is one ``run_trial`` call and one MLflow run, nested under the study's parent
run. Grid cells (e.g. variant x apply_to x seed) each finish exactly once, also with several
worker processes (``--workers N``) or machines (``--storage postgresql://...``, every
machine runs the same command), and when workers crash: a killed trial is marked failed
and retried, resuming its MLflow run from its last checkpoint. Search spaces are sampled
with TPE or random search, optionally pruned (median / hyperband) on the validation curve.
Hydra-style overrides edit the file on the command line (``base.epochs=1 grid.seed=[0]``),
validated as the file is and recorded on the parent run.

Modules: spec / schema (study files), storage, parent (study and parent run),
worker, sampling, recovery (dead and stopped trials), supervisor (worker processes), launcher
(job arrays), report (what a study shows), state, common. This module stays import-light:
optuna, mlflow, torch and pydantic load only when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Any

from ablate.cli_options import add_dataclass_options, add_tracking_uri, option
from ablate.exceptions import AblateError, ConfigError
from ablate.study.common import MAX_CELLS, RUN_FLAGS

__all__ = ["add_arguments", "command", "load_study", "run_study", "StudyPlan", "StudyOutcome"]


def __getattr__(name: str) -> Any:  # the Python API loads its modules when first used
    modules = {"load_study": "spec", "StudyPlan": "spec", "run_study": "supervisor",
               "StudyOutcome": "common"}
    if name not in modules:
        raise AttributeError(f"module 'ablate.study' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ablate.study.{modules[name]}"), name)


@dataclass(frozen=True)
class StudyOptions:
    """The flags of ``ablate study`` (one ``--flag`` each), checked before anything loads."""

    trials: int | None = option(
        None, "run at most N trials in this command (all workers together); the study's "
        "total is one trial per grid cell, or the file's n_trials", metavar="N")  # fmt: skip
    timeout: float | None = option(
        None, "start no new trial after S seconds (default: the file's timeout); running "
        "trials finish", metavar="S")  # fmt: skip
    workers: int | None = option(
        None, "worker processes on this machine (default: --workers-per-device per device, "
        "i.e. 1 without GPUs); other machines join by running the same command with the same "
        "--storage", metavar="N")  # fmt: skip
    devices: str | None = option(
        None, "devices the workers take round-robin, e.g. cuda:0,cuda:1 (default: every "
        "visible GPU; without GPUs the study file's device)", metavar="LIST")  # fmt: skip
    workers_per_device: int = option(
        1, "trials sharing each device at once when --workers is not given", metavar="K")
    storage: str | None = option(
        None, "Optuna storage (default: the file's storage, else sqlite:///ablate-optuna.db "
        "here); postgresql://USER@HOST/DB or mysql://... for many machines",
        metavar="URL")  # fmt: skip
    dry_run: bool = option(False, "print the resolved trials and exit without running")
    quiet: bool = option(
        False, "no progress bar and no per-trial or per-epoch lines; only the summary")
    yes: bool = option(False, f"run a grid of more than {MAX_CELLS:,} cells")

    def __post_init__(self) -> None:
        for flag, value in (("--trials", self.trials), ("--workers", self.workers),
                            ("--workers-per-device", self.workers_per_device)):  # fmt: skip
            if value is not None and value < 1:
                raise ConfigError(f"{flag}: must be >= 1, got {value}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout: must be > 0 seconds, got {self.timeout:g}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ablate.config import RunConfig

    file = parser.add_argument("file", metavar="FILE", help="study file, e.g. studies/quick.yaml")
    file.complete = {"bash": "_shtab_compgen_files", "zsh": "_files"}  # type: ignore[attr-defined]
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="edit the study file, "
                        "Hydra-style: base.epochs=2, grid.seed=[0,1] (YAML values), "
                        "search_space.lr.high=0.01, ~grid.lr (remove a key)")  # fmt: skip
    add_dataclass_options(parser, StudyOptions)
    add_tracking_uri(parser, first="the file's base.tracking_uri")
    runs = parser.add_argument_group("run settings of every trial (each a base.KEY override)")
    skip = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in RUN_FLAGS)
    add_dataclass_options(runs, RunConfig, skip=skip, default=argparse.SUPPRESS)
    from ablate.study.launcher import add_arguments as add_launcher_arguments

    add_launcher_arguments(parser)  # --launcher slurm|local, --array N, --slurm-*, --status


def command(args: argparse.Namespace) -> int:
    """Validate the study file, then dry-run it or run it; 0 = done, 1 = cells failed for good."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(StudyOptions)}
    options = StudyOptions(**given)  # bad values fail here, before torch or MLflow load
    flags = {k: getattr(args, k) for k in RUN_FLAGS if hasattr(args, k)}
    if args.quiet:
        flags["quiet"] = True
    overrides = [*args.overrides, *(f"base.{k}={json.dumps(v)}" for k, v in flags.items())]

    from ablate.study.report import format_plan
    from ablate.study.spec import load_study
    from ablate.study.storage import resolve_storage_url
    from ablate.study.supervisor import run_study
    from ablate.tracking import resolve_tracking_uri

    plan = load_study(args.file, overrides, confirm_large=options.yes)
    try:
        storage = resolve_storage_url(options.storage or plan.spec.storage)
    except ConfigError as err:
        where = "--storage" if options.storage else f"{plan.path}: storage"
        raise ConfigError(f"{where}: {err}") from None
    tracking_uri = resolve_tracking_uri(args.tracking_uri or plan.base.get("tracking_uri"))
    if tracking_uri == storage and not storage.startswith("sqlite:///:memory:"):
        # both keep their schema version in a table named alembic_version
        raise ConfigError(f"--storage and the MLflow tracking URI are one database "
                          f"({tracking_uri}); give each its own, e.g. postgresql://HOST/optuna "
                          "and postgresql://HOST/mlflow")  # fmt: skip
    from ablate.study.launcher import launch_command, launcher_flags

    if args.status or args.launcher or launcher_flags(args):
        outcome = launch_command(args, plan, storage, tracking_uri)
        if outcome is None:  # --status, submitted without --wait, or --dry-run
            return 0
    elif options.dry_run:
        timeout = options.timeout if options.timeout is not None else plan.spec.timeout
        print(format_plan(plan, storage=storage, tracking_uri=tracking_uri,
                          max_trials=options.trials, timeout=timeout,
                          workers=options.workers or options.workers_per_device))
        return 0
    else:
        outcome = run_study(
            plan, storage=storage, tracking_uri=tracking_uri, workers=options.workers,
            devices=options.devices, workers_per_device=options.workers_per_device,
            max_trials=options.trials, timeout=options.timeout, quiet=options.quiet,
        )
    print(outcome.table)
    if outcome.errors:  # never "complete" next to an error
        state = "stopped by the error below"
    elif not outcome.complete:
        state = "incomplete (run the same command again to continue)"
    elif outcome.exhausted:
        state = (f"finished, but {len(outcome.exhausted)} cells failed "
                 f"{1 + plan.spec.max_retries} times and were given up (raise max_retries in the "
                 "study file and rerun to try them again)")  # fmt: skip
    else:
        state = "complete"
    print(f"study {outcome.name!r}: {state}; {outcome.trials_run} trials run now; "
          f"storage {outcome.storage}; "
          f"MLflow parent run {outcome.parent_run_id} at {outcome.tracking_uri} "
          f"(compare with: ablate compare --study {outcome.name} "
          f"--tracking-uri {outcome.tracking_uri})")  # fmt: skip
    from ablate.tracking.store import url_of_run

    print(f"parent run in the MLflow UI: {url_of_run(tracking_uri, outcome.parent_run_id)}")
    trials = url_of_run(tracking_uri, outcome.parent_run_id, study=outcome.name)
    print(f"its trials' curves side by side: {trials}")
    sys.stdout.flush()
    if outcome.errors:
        raise AblateError(outcome.errors[0])
    return 1 if outcome.exhausted else 0
