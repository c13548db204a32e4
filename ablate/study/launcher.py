"""``ablate study FILE --launcher slurm|local``: the study as a job array, through submitit.

    launching command:  prepare the study (storage + MLflow parent run) -> submit N tasks
    each array task:    one study worker (the usual claim loop) against the shared storage
    --wait:             poll the jobs, show the study's progress, print the usual summary

Every task runs the same worker as ``ablate study FILE`` on one machine; the storage (a
PostgreSQL or MySQL server for SLURM) decides which trial each task runs, so tasks can
start late, die, be preempted or be requeued without running a grid cell twice. A stopped
task hands its trial over (:mod:`ablate.trial.stopping`): the next worker resumes it in the same
MLflow run. With ``--requeue`` the time-limit warning submitit asks SLURM for
(``--signal=USR2@90``) stops the trial and requeues the task through submitit's
checkpoint hook. A plain SIGTERM (preemption, ``scancel``) is left to SLURM's own requeue
policy, so a cancelled job is never requeued by ablate.

``--launcher local`` runs the same array with submitit's local executor (one process per
task on this machine); the tests use it. ``--dry-run`` prints the SLURM job script.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.exceptions import AblateError, ConfigError, Stopped
from ablate.study.common import RunSettings
from ablate.study.storage import display_url

if TYPE_CHECKING:
    from ablate.study.common import StudyOutcome
    from ablate.study.spec import StudyPlan

__all__ = [
    "add_arguments",
    "LaunchOptions",
    "parse_slurm_time",
    "check_storage",
    "sbatch_script",
    "launch",
    "launch_command",
    "launcher_flags",
    "ArrayTask",
]

DEFAULT_TIME_MIN = 60  # --slurm-time when not given (submitit's own default is 5 minutes)
SIGNAL_DELAY_S = 90  # SLURM warns each task this long before its time limit (USR2)
# submitit gives up requeueing a task after this many time limits (its default: 3); a long
# study may need many, and each requeue resumes where the storage says the study is
MAX_REQUEUES = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launcher flags of ``ablate study``."""
    group = parser.add_argument_group("cluster launch (submitit: pip install 'ablate[slurm]')")
    add = group.add_argument
    add("--launcher", choices=("slurm", "local"), default=None,
        help="submit the study as a job array of --array workers: slurm (sbatch through "
        "submitit) or local (the same array as processes on this machine)")
    add("--array", type=int, default=1, metavar="N",
        help="array tasks, each one study worker (default: 1)")
    add("--array-parallelism", type=int, default=None, metavar="K",
        help="SLURM runs at most K array tasks at once (default: all)")
    add("--slurm-partition", default=None, metavar="NAME", help="sbatch --partition")
    add("--slurm-time", default=None, metavar="TIME",
        help=f"time limit per task: minutes, HH:MM:SS or D-HH:MM (default: {DEFAULT_TIME_MIN})")
    add("--slurm-gpus-per-task", type=int, default=None, metavar="G",
        help="sbatch --gpus-per-task")
    add("--slurm-cpus-per-task", type=int, default=None, metavar="C",
        help="sbatch --cpus-per-task (the worker uses that many torch threads)")
    add("--slurm-mem", default=None, metavar="SIZE", help="sbatch --mem, e.g. 16G")
    add("--slurm-account", default=None, metavar="NAME", help="sbatch --account")
    add("--slurm-qos", default=None, metavar="NAME", help="sbatch --qos")
    add("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
        help="any other sbatch option, e.g. constraint=a100 or exclusive (repeatable)")
    add("--requeue", action="store_true",
        help="requeue a task at its time limit (its trial resumes from the checkpoint)")
    add("--log-dir", default=None, metavar="DIR",
        help="submitit job files and task logs (default: ablate-logs/STUDY)")
    add("--wait", action="store_true",
        help="block until the array ends, then print the usual study summary")
    add("--status", action="store_true",
        help="print where the study stands (trials per state, running epochs) and exit")


@dataclass(frozen=True)
class LaunchOptions:
    """The launcher flags, checked."""

    launcher: str
    array: int = 1
    parallelism: int | None = None
    time_min: int = DEFAULT_TIME_MIN
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit SlurmExecutor parameters
    extra: dict[str, Any] = field(default_factory=dict)  # more #SBATCH lines
    requeue: bool = False
    log_dir: str = "ablate-logs"
    wait: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace, study_name: str) -> "LaunchOptions":
        for flag, value in (
            ("--array", args.array),
            ("--array-parallelism", args.array_parallelism),
            ("--slurm-gpus-per-task", args.slurm_gpus_per_task),
            ("--slurm-cpus-per-task", args.slurm_cpus_per_task),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{flag}: must be >= 1, got {value}")
        if getattr(args, "workers", None) not in (None, 1):
            raise ConfigError(
                "--workers: with --launcher each array task runs one worker; use --array N"
            )
        slurm = {
            "partition": args.slurm_partition,
            "gpus_per_task": args.slurm_gpus_per_task,
            "cpus_per_task": args.slurm_cpus_per_task,
            "account": args.slurm_account,
            "qos": args.slurm_qos,
        }
        extra = dict(_parse_extra(item) for item in args.slurm_extra)
        if args.slurm_mem is not None:
            if not re.fullmatch(r"\d+(\.\d+)?[KMGT]?B?", args.slurm_mem.upper()):
                raise ConfigError(f"--slurm-mem: expected a size like 16G or 4000M, got "
                                  f"{args.slurm_mem!r}")
            extra["mem"] = args.slurm_mem
        if args.requeue:
            extra["requeue"] = True
        time_min = DEFAULT_TIME_MIN if args.slurm_time is None else parse_slurm_time(
            args.slurm_time
        )
        return cls(
            launcher=args.launcher,
            array=args.array,
            parallelism=args.array_parallelism,
            time_min=time_min,
            slurm={k: v for k, v in slurm.items() if v is not None},
            extra=extra,
            requeue=args.requeue,
            log_dir=args.log_dir or str(Path("ablate-logs") / study_name),
            wait=args.wait,
        )


def launcher_flags(args: argparse.Namespace) -> list[str]:
    """The launcher flags given on the command line (other than --launcher and --status)."""
    defaults = {"array": 1, "slurm_extra": [], "requeue": False, "wait": False}
    names = (
        "array", "array_parallelism", "slurm_partition", "slurm_time", "slurm_gpus_per_task",
        "slurm_cpus_per_task", "slurm_mem", "slurm_account", "slurm_qos", "slurm_extra",
        "requeue", "log_dir", "wait",
    )  # fmt: skip
    return [
        "--" + name.replace("_", "-")
        for name in names
        if getattr(args, name, defaults.get(name)) != defaults.get(name)
    ]


def _parse_extra(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ConfigError(
            f"--slurm-extra: expected KEY=VALUE with an sbatch option name, got {item!r}"
        )
    return key, (value if sep else True)


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ConfigError(
            f"--slurm-time: expected minutes, HH:MM:SS or D-HH:MM, got {text!r}"
        )
    days, a, b, c = match.groups()
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
    elif c is not None:  # HH:MM:SS
        hours, minutes, seconds = int(a), int(b), int(c)
    elif b is not None:  # MM:SS
        hours, minutes, seconds = 0, int(a), int(b)
    else:  # MM
        hours, minutes, seconds = 0, int(a), 0
    total = int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise ConfigError(f"--slurm-time: must be at least one minute, got {text!r}")
    return total


def check_storage(url: str, launcher: str) -> None:
    """Refuse a SQLite storage for tasks that may run on other nodes."""
    if launcher == "slurm" and url.startswith("sqlite"):
        raise ConfigError(
            f"--launcher slurm: the SQLite storage {display_url(url)} cannot be shared by tasks "
            "on several nodes (SQLite on NFS corrupts); use a PostgreSQL or MySQL server: "
            "--storage postgresql://USER@HOST/DB"
        )


def _executor_parameters(plan: StudyPlan, opts: LaunchOptions) -> dict[str, Any]:
    params: dict[str, Any] = {
        "job_name": f"ablate-{plan.name}",
        "time": opts.time_min,
        "signal_delay_s": SIGNAL_DELAY_S,
        **opts.slurm,
    }
    if opts.parallelism is not None:
        params["array_parallelism"] = opts.parallelism
    if opts.extra:
        params["additional_parameters"] = dict(opts.extra)
    return params


def sbatch_script(plan: StudyPlan, opts: LaunchOptions) -> str:
    """The job script ``--launcher slurm`` submits (submitit's, for an array of tasks)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(opts.log_dir).resolve() / "%j"
    command = " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))]
    )
    return _make_sbatch_string(
        command=command,
        folder=folder,
        map_count=opts.array,
        **_executor_parameters(plan, opts),
    )


def _executor(plan: StudyPlan, opts: LaunchOptions) -> Any:
    import submitit

    folder = Path(opts.log_dir) / "%j"
    if opts.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(timeout_min=opts.time_min, signal_delay_s=SIGNAL_DELAY_S)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    except RuntimeError:
        raise AblateError(
            "--launcher slurm: no SLURM here (srun not found); run it on the cluster's login "
            "node, or check the job script with --dry-run, or use --launcher local"
        ) from None
    executor.update_parameters(**_executor_parameters(plan, opts))
    return executor


class ArrayTask:
    """What each array task runs: one study worker against the shared storage.

    Picklable (submitit sends it to the task). Devices, threads and the ``--timeout``
    deadline are decided in the task, on the node that runs it.

    Args:
        plan: the loaded study file.
        settings: the launching command's settings (storage, tracking URI, invocation).
        timeout: start no new trial this many seconds after the task started.
        time_min: the task's time limit, so a stop signal near it counts as ``time_limit``.
        requeue: requeue the task through submitit when its time-limit warning stops it.
        threads: torch threads (None: every core the task may use).
    """

    def __init__(
        self,
        plan: StudyPlan,
        settings: RunSettings,
        *,
        timeout: float | None,
        time_min: int,
        requeue: bool,
        threads: int | None = None,
    ):
        self.plan = plan
        self.settings = settings
        self.timeout = timeout
        self.time_min = time_min
        self.requeue = requeue
        self.threads = threads

    def __call__(self, index: int) -> int:
        from ablate.study.supervisor import default_devices, usable_cpus
        from ablate.study.worker import run_worker
        from ablate.trial.stopping import JOB_END_ENV, StopSignals

        start = time.time()
        os.environ[JOB_END_ENV] = str(start + 60 * self.time_min)
        threads = self.threads or max(1, usable_cpus())
        if "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(threads)
        settings = dataclasses.replace(
            self.settings,
            devices=default_devices(),
            threads=threads,
            deadline=None if self.timeout is None else start + self.timeout,
        )
        try:
            with StopSignals():
                return run_worker(self.plan, settings, index)
        except Stopped as err:
            print(
                f"ablate study: array task {index} {err}; its trial was handed over and "
                "resumes from its last checkpoint",
                file=sys.stderr,
                flush=True,
            )
            if self.requeue:
                _requeue_through_submitit(err)
            return 0

    def checkpoint(self, index: int) -> Any:
        """submitit's hook before a requeue: the task restarts as it is (the storage knows
        where each trial stands)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)


def _requeue_through_submitit(err: Stopped) -> None:
    """Hand the signal to the handler submitit installed for it (checkpoint, requeue, exit).

    Only submitit's own signal (its time-limit warning) has such a handler: a SIGTERM or
    Ctrl-C never requeues.
    """
    signum = getattr(signal, err.signal_name)
    handler = signal.getsignal(signum)
    # submitit's SignalHandler.checkpoint_and_try_requeue (SIGTERM has its `bypass`)
    if getattr(handler, "__name__", "") == "checkpoint_and_try_requeue":
        handler(signum, None)


def launch_command(
    args: argparse.Namespace, plan: StudyPlan, storage_url: str, tracking_uri: str
) -> StudyOutcome | None:
    """``ablate study FILE --status`` / ``--launcher ...``: None unless it waited (--wait)."""
    given = launcher_flags(args)
    if given and not args.launcher:
        raise ConfigError(f"{given[0]}: only with --launcher slurm|local")
    if args.status:
        from ablate.study.status import status_text

        print(status_text(plan, storage_url))
        return None
    return launch(
        plan,
        LaunchOptions.from_args(args, plan.name),
        storage_url=storage_url,
        tracking_uri=tracking_uri,
        max_trials=args.trials,
        timeout=args.timeout,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )


def launch(
    plan: StudyPlan,
    opts: LaunchOptions,
    *,
    storage_url: str,
    tracking_uri: str,
    max_trials: int | None = None,
    timeout: float | None = None,
    dry_run: bool = False,
    quiet: bool = False,
) -> StudyOutcome | None:
    """Submit the study's array; with ``opts.wait``, wait and return the summary.

    Returns None when the array was only submitted (or ``dry_run`` printed the script).
    """
    check_storage(storage_url, opts.launcher)
    _require_submitit()
    if dry_run:
        print(_dry_run_text(plan, opts, storage_url))
        return None
    from ablate.study.parent import prepare_study

    # one invocation for the whole array: --trials counts the trials of every task
    settings = RunSettings(
        storage_url=storage_url, tracking_uri=tracking_uri, max_trials=max_trials
    )
    parent = prepare_study(plan, settings)  # once, before any task looks for the study
    executor = _executor(plan, opts)
    local_threads = None
    if opts.launcher == "local":
        from ablate.study.supervisor import usable_cpus

        local_threads = max(1, usable_cpus() // min(opts.array, opts.parallelism or opts.array))
    task = ArrayTask(
        plan,
        settings,
        timeout=timeout if timeout is not None else plan.spec.timeout,
        time_min=opts.time_min,
        requeue=opts.requeue,
        threads=local_threads,
    )
    if opts.launcher == "slurm":
        jobs = executor.map_array(task, list(range(opts.array)))
    else:
        jobs = _submit_local(executor, task, opts.array)
    print(_submitted_text(plan, opts, jobs, storage_url, tracking_uri), flush=True)
    if not opts.wait:
        return None
    return _wait(plan, settings, parent, jobs, quiet)


def _submit_local(executor: Any, task: ArrayTask, count: int) -> list[Any]:
    """One local job per task; with GPUs here, task i sees GPU ``i % n`` only."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    jobs = []
    for index in range(count):
        if gpus:
            executor.update_parameters(gpus_per_node=1, visible_gpus=(index % gpus,))
        jobs.append(executor.submit(task, index))
    return jobs


def _require_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--launcher needs submitit: pip install 'ablate[slurm]' (or pip install submitit)"
        ) from None


def _dry_run_text(plan: StudyPlan, opts: LaunchOptions, storage_url: str) -> str:
    head = (
        f"# ablate study {plan.path}: {opts.array} array task(s), each one study worker on "
        f"{display_url(storage_url)} (--dry-run: nothing submitted)\n"
    )
    if opts.launcher == "local":
        return head + (
            f"# --launcher local: {opts.array} processes on this machine through submitit's "
            f"local executor, time limit {opts.time_min} min each, logs in "
            f"{Path(opts.log_dir).resolve()}"
        )
    return head + sbatch_script(plan, opts)


def _submitted_text(
    plan: StudyPlan, opts: LaunchOptions, jobs: list[Any], storage_url: str, tracking_uri: str
) -> str:
    ids = [job.job_id for job in jobs]
    shown = ", ".join(ids) if len(ids) <= 6 else f"{ids[0]} .. {ids[-1]}"
    storage = display_url(storage_url)
    what = "SLURM job array" if opts.launcher == "slurm" else "local processes"
    lines = [
        f"submitted {len(ids)} array task(s) of study {plan.name!r} as {what}: {shown}",
        f"logs: {Path(opts.log_dir).resolve()}",
        "follow the study:",
        f"  ablate study {plan.path} --status --storage {storage}",
        f"  optuna-dashboard {storage}",
        f"  mlflow ui --backend-store-uri {tracking_uri}   (or: ablate ui)",
    ]
    if opts.launcher == "slurm":
        lines.append(f"  squeue --me --name ablate-{plan.name}")
    return "\n".join(lines)


def _wait(
    plan: StudyPlan, settings: RunSettings, parent: str, jobs: list[Any], quiet: bool
) -> StudyOutcome:
    from ablate.study.report import Progress, summarize

    progress = Progress(plan, settings, enabled=not quiet)
    progress.start()
    ran, errors = 0, []
    try:
        for job in jobs:
            try:
                ran += int(job.result() or 0)
            except Exception as err:  # the task's traceback is in its log
                first = " ".join(str(err).split())[:300]
                errors.append(f"array task {job.job_id} failed: {first} (log: {job.paths.stderr})")
    finally:
        progress.stop()
    return summarize(plan, settings, parent, ran, errors)

