"""``ablate study FILE --launcher slurm|local``: the study as a job array, through submitit.

    launching command:  prepare the study (storage + MLflow parent run) -> submit N tasks
    each array task:    one study worker (the usual claim loop) against the shared storage
    --wait:             follow the queue, show the study's progress, print the usual summary

Every task runs the same worker as ``ablate study FILE`` on one machine; the storage (a
PostgreSQL or MySQL server for SLURM) decides which trial each task runs, so tasks can
start late, die, be preempted or be requeued without running a grid cell twice. A stopped
task hands its trial over (:mod:`ablate.trial.stopping`): the next worker resumes it in the
same MLflow run. SLURM warns each task ``--slurm-signal-offset`` seconds before its time
limit (USR2, the signal submitit asks for); with ``--requeue`` that warning requeues the
task through submitit's checkpoint hook, unless the task finished no epoch since it started
(its requeues would only start over). A SIGTERM (preemption, ``scancel``, ``scontrol
requeue``) is left to SLURM's own requeue policy.

``--launcher local`` runs the same array with submitit's local executor (one process per
task on this machine). ``--dry-run`` prints the SLURM job script, ready for ``sbatch``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.cli_options import add_dataclass_options, option
from ablate.exceptions import AblateError, ConfigError, Stopped
from ablate.study.common import RunSettings
from ablate.study.storage import display_url, read_trials

if TYPE_CHECKING:
    from ablate.study.common import StudyOutcome
    from ablate.study.spec import StudyPlan

__all__ = ["add_arguments", "LaunchOptions", "launch_command", "launcher_flags", "ArrayTask"]

DEFAULT_TIME_MIN = 60  # --slurm-time when not given (submitit's own default is 5 minutes)
# submitit gives up requeueing a task after this many time limits (its default: 3); a long
# study may need many, and each requeue resumes where the storage says the study is
MAX_REQUEUES = 100
# --wait: seconds between looks at the queue, from FIRST_POLL_S doubling up to POLL_S (a short
# array is seen ending soon; a long one costs the scheduler one squeue per 5 s), and again from
# FIRST_POLL_S whenever a task writes its result (a file: looking for it costs no squeue)
FIRST_POLL_S, POLL_S = 0.5, 5.0


@dataclass(frozen=True)
class LaunchOptions:
    """The launcher flags of ``ablate study`` (one ``--field-name`` flag per field), checked."""

    launcher: str | None = option(
        None, "submit the study as a job array of --array workers: slurm (sbatch through "
        "submitit) or local (the same array as processes on this machine)",
        choices=("slurm", "local"))  # fmt: skip
    array: int = option(1, "array tasks, each one study worker", metavar="N")
    array_parallelism: int | None = option(
        None, "SLURM runs at most K array tasks at once (default: all)", metavar="K")
    slurm_partition: str | None = option(None, "sbatch --partition", metavar="NAME")
    slurm_time: str | None = option(
        None, "time limit per task: minutes, HH:MM:SS or D-HH:MM (default: "
        f"{DEFAULT_TIME_MIN} minutes)", metavar="TIME")  # fmt: skip
    slurm_signal_offset: int = option(
        90, "SLURM warns each task (USR2) this many seconds before its time limit (up to 60 s "
        "earlier): the task hands its trial over, and with --requeue is requeued; leave time "
        "to save and upload a checkpoint", metavar="S")  # fmt: skip
    slurm_gpus_per_task: int | None = option(None, "sbatch --gpus-per-task", metavar="G")
    slurm_cpus_per_task: int | None = option(
        None, "sbatch --cpus-per-task (the worker uses that many torch threads)", metavar="C")
    slurm_mem: str | None = option(None, "sbatch --mem, e.g. 16G", metavar="SIZE")
    slurm_account: str | None = option(None, "sbatch --account", metavar="NAME")
    slurm_qos: str | None = option(None, "sbatch --qos", metavar="NAME")
    slurm_extra: tuple[str, ...] = ()  # repeatable, so declared in add_arguments
    requeue: bool = option(
        False, "requeue a task at its time limit (its trial resumes from the checkpoint)")
    log_dir: str | None = option(
        None, "submitit job files and task logs (default: ablate-logs/STUDY)", metavar="DIR")
    wait: bool = option(False, "block until the array ends, then print the usual study summary")

    def __post_init__(self) -> None:
        for name in ("array", "array_parallelism", "slurm_gpus_per_task", "slurm_cpus_per_task",
                     "slurm_signal_offset"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
        mem = self.slurm_mem
        if mem is not None and not re.fullmatch(r"\d+(\.\d+)?[KMGT]?B?", mem.upper()):
            raise ConfigError(f"--slurm-mem: expected a size like 16G or 4000M, got {mem!r}")
        for item in self.slurm_extra:
            _parse_extra(item)
        if self.slurm_signal_offset >= 60 * self.time_min:
            raise ConfigError(f"--slurm-signal-offset: {self.slurm_signal_offset} s leaves no "
                              f"time before the warning within the {self.time_min}-minute time "
                              "limit; raise --slurm-time or lower --slurm-signal-offset")

    @property
    def time_min(self) -> int:
        return DEFAULT_TIME_MIN if self.slurm_time is None else parse_slurm_time(self.slurm_time)

    def folder(self, plan: StudyPlan) -> Path:
        """Where submitit keeps the job files and task logs (``%j``: one folder per job)."""
        return Path(self.log_dir or Path("ablate-logs") / plan.name).resolve()

    def executor_parameters(self, plan: StudyPlan) -> dict[str, Any]:
        """submitit ``SlurmExecutor`` parameters (each becomes an ``#SBATCH`` line)."""
        params: dict[str, Any] = {"job_name": f"ablate-{plan.name}", "time": self.time_min,
                                  "signal_delay_s": self.slurm_signal_offset}  # fmt: skip
        for name in ("partition", "gpus_per_task", "cpus_per_task", "account", "qos"):
            if getattr(self, f"slurm_{name}") is not None:
                params[name] = getattr(self, f"slurm_{name}")
        if self.array_parallelism is not None:
            params["array_parallelism"] = self.array_parallelism
        extra = dict(_parse_extra(item) for item in self.slurm_extra)
        if self.slurm_mem is not None:
            extra["mem"] = self.slurm_mem
        if self.requeue:
            extra["requeue"] = True
        if extra:
            params["additional_parameters"] = extra
        return params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launcher flags of ``ablate study`` (from :class:`LaunchOptions`) and ``--status``."""
    group = parser.add_argument_group("cluster launch (submitit: pip install 'ablate[slurm]')")
    add_dataclass_options(group, LaunchOptions)
    group.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. constraint=a100 or exclusive "
                       "(repeatable)")  # fmt: skip
    group.add_argument("--status", action="store_true",
                       help="print where the study stands (trials per state, running epochs) "
                       "and exit")  # fmt: skip


def launcher_flags(args: argparse.Namespace) -> list[str]:
    """The launcher flags given on the command line (other than --launcher and --status)."""
    given = []
    for f in dataclasses.fields(LaunchOptions):
        value = getattr(args, f.name, f.default)
        value = tuple(value) if isinstance(value, list) else value  # --slurm-extra
        if f.name != "launcher" and value != f.default:
            given.append("--" + f.name.replace("_", "-"))
    return given


def _parse_extra(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ConfigError("--slurm-extra: expected KEY=VALUE with an sbatch option name, got "
                          f"{item!r}")  # fmt: skip
    return key, (value if sep else True)


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ConfigError(f"--slurm-time: expected minutes, HH:MM:SS or D-HH:MM, got {text!r}")
    days, *rest = match.groups()
    values = [int(v) for v in rest if v is not None]
    if days is not None or len(values) == 3:  # D-HH[:MM[:SS]] or HH:MM:SS
        hours, minutes, seconds = (values + [0, 0])[:3]
    else:  # MM or MM:SS
        hours, (minutes, seconds) = 0, (values + [0])[:2]
    total = int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise ConfigError(f"--slurm-time: must be at least one minute, got {text!r}")
    return total


@dataclass
class ArrayTask:
    """What each array task runs: one study worker against the shared storage.

    Picklable (submitit sends it to the task). Devices, threads and the ``--timeout``
    deadline are decided in the task, on the node that runs it. Returns None when the
    worker found nothing more to run, else what stopped it (one line).
    """

    plan: StudyPlan
    settings: RunSettings  # the launching command's (storage, tracking URI, invocation)
    opts: LaunchOptions
    timeout: float | None  # start no new trial this many seconds after the task started
    threads: int | None = None  # torch threads (None: every core the task may use)

    def __call__(self, index: int) -> str | None:
        import submitit

        from ablate.study.storage import process_identity
        from ablate.study.supervisor import default_devices, usable_cpus
        from ablate.study.worker import run_worker
        from ablate.trial.stopping import JOB_END_ENV, StopSignals

        start = time.time()
        os.environ[JOB_END_ENV] = str(start + 60 * self.opts.time_min)  # a stop near it
        name = f"array task {submitit.JobEnvironment().job_id}"
        threads = self.threads or max(1, usable_cpus())
        if "OMP_NUM_THREADS" not in os.environ:
            import torch

            torch.set_num_threads(threads)
        deadline = None if self.timeout is None else start + self.timeout
        # a (re)started task with nothing left to claim ends: it would only hold its allocation
        settings = dataclasses.replace(self.settings, devices=default_devices(), threads=threads,
                                       deadline=deadline, wait_for_others=False)  # fmt: skip
        where = f"{os.uname().nodename}: one worker on {display_url(settings.storage_url)}"
        print(f"ablate study: {name} of study {self.plan.name!r} on {where}", file=sys.stderr,
              flush=True)  # fmt: skip
        try:
            with StopSignals():
                ran = run_worker(self.plan, settings, index)
        except Stopped as err:
            stopped = f"{name} {err}"
            requeue = self.opts.requeue and err.reason == "time_limit"
            if requeue and not _trained_an_epoch(self.plan, settings, process_identity()):
                requeue = False
                stopped += (f" {time.time() - start:.0f} s after it started, before finishing one "
                            "epoch; not requeued (every requeue would start over): raise "
                            "--slurm-time or lower --slurm-signal-offset, then run the same "
                            "command again")  # fmt: skip
            else:
                stopped += "; its trial was handed over and resumes from its last checkpoint"
            print(f"ablate study: {stopped}", file=sys.stderr, flush=True)
            signum = getattr(signal, err.signal_name)
            handler = signal.getsignal(signum)
            # submitit's handler of its time-limit signal checkpoints, requeues and exits
            if requeue and getattr(handler, "__name__", "") == "checkpoint_and_try_requeue":
                handler(signum, None)
        else:
            stopped = None
            print(f"ablate study: {name}: done, {ran} trial(s) run", file=sys.stderr, flush=True)
        # The work is done: a time-limit warning now, while Python exits (and resets its
        # handlers), would kill the task and SLURM would record it FAILED.
        for warning in (signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(warning, signal.SIG_IGN)
        gc.freeze()  # submitit exits next: no last garbage collection (see ablate.cli.exit_with)
        return stopped

    def checkpoint(self, index: int) -> Any:
        """submitit's hook before a requeue: the task restarts as it is (the storage knows
        where each trial stands)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, index)


def _trained_an_epoch(plan: StudyPlan, settings: RunSettings, me: dict[str, Any]) -> bool:
    """Whether a trial of this process got past the epoch it started from (Optuna's
    intermediate values: one per epoch, replayed from the checkpoint when it resumes)."""
    from optuna.trial import TrialState

    from ablate.study import state as st

    try:
        trials = read_trials(settings.storage_url, plan.name)
    except Exception:  # noqa: BLE001 - the storage is unreachable: cannot tell, requeue as asked
        return True
    last = {t.number: max(t.intermediate_values, default=0) for t in trials}
    for t in trials:
        worker = t.system_attrs.get(st.WORKER_ATTR) or {}
        if any(worker.get(key) != me[key] for key in ("host", "pid", "pid_start")):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        retried = t.system_attrs.get("retry_history") or []
        if last[t.number] > (last.get(retried[-1], 0) if retried else 0):
            return True
    return False


def launch_command(
    args: argparse.Namespace, plan: StudyPlan, storage_url: str, tracking_uri: str
) -> StudyOutcome | None:
    """``--status``, or submit the study's array (``--dry-run``: print its script); with
    ``--wait``, wait for it and return the summary, else None."""
    given = launcher_flags(args)
    if given and not args.launcher:
        raise ConfigError(f"{given[0]}: only with --launcher slurm|local")
    if args.status:
        from ablate.study.report import status_text

        print(status_text(plan, storage_url))
        return None
    if args.workers not in (None, 1):
        raise ConfigError("--workers: with --launcher each array task runs one worker; use "
                          "--array N")  # fmt: skip
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(LaunchOptions)}
    opts = LaunchOptions(**{**values, "slurm_extra": tuple(args.slurm_extra)})
    if opts.launcher == "slurm" and storage_url.startswith("sqlite"):
        raise ConfigError(f"--launcher slurm: the SQLite storage {display_url(storage_url)} "
                          "cannot be shared by tasks on several nodes (SQLite on NFS corrupts); "
                          "use a PostgreSQL or MySQL server: --storage postgresql://USER@HOST/DB")
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher needs submitit: pip install 'ablate[slurm]' (or pip install "
                          "submitit)") from None  # fmt: skip
    if args.dry_run:
        print(_dry_run_text(plan, opts, storage_url))
        return None
    from ablate.study.parent import prepare_study

    # one invocation for the whole array: --trials counts the trials of every task
    settings = RunSettings(storage_url, tracking_uri, max_trials=args.trials)
    parent = prepare_study(plan, settings)  # once, before any task looks for the study
    timeout = args.timeout if args.timeout is not None else plan.spec.timeout
    task = ArrayTask(plan, settings, opts, timeout)
    folder = opts.folder(plan) / "%j"
    if opts.launcher == "slurm":
        try:
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        except RuntimeError:
            raise AblateError("--launcher slurm: no SLURM here (srun not found); run it on the "
                              "cluster's login node, or check the job script with --dry-run, or "
                              "use --launcher local") from None  # fmt: skip
        executor.update_parameters(**opts.executor_parameters(plan))
        jobs = executor.map_array(task, list(range(opts.array)))
    else:
        jobs = _submit_local(submitit, folder, opts, task)
    print(_submitted_text(plan, opts, jobs, storage_url, tracking_uri), flush=True)
    return _wait(plan, settings, parent, jobs, args.quiet) if opts.wait else None


def _submit_local(submitit: Any, folder: Path, opts: LaunchOptions, task: ArrayTask) -> list:
    """One local process per task sharing this machine's cores; with GPUs here, task i sees
    GPU ``i % n`` only."""
    import torch

    from ablate.study.supervisor import usable_cpus

    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
    executor.update_parameters(timeout_min=opts.time_min, signal_delay_s=opts.slurm_signal_offset)
    task.threads = max(1, usable_cpus() // min(opts.array, opts.array_parallelism or opts.array))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    jobs = []
    for index in range(opts.array):
        if gpus:
            executor.update_parameters(gpus_per_node=1, visible_gpus=(index % gpus,))
        jobs.append(executor.submit(task, index))
    return jobs


def _dry_run_text(plan: StudyPlan, opts: LaunchOptions, storage_url: str) -> str:
    head = (f"# ablate study {plan.path}: {opts.array} array task(s), each one study worker on "
            f"{display_url(storage_url)} (--dry-run: nothing submitted)")  # fmt: skip
    if opts.launcher == "local":
        return head + (f"\n# --launcher local: {opts.array} processes on this machine through "
                       f"submitit's local executor, time limit {opts.time_min} min each, logs in "
                       f"{opts.folder(plan)}")  # fmt: skip
    from submitit.slurm.slurm import _make_sbatch_string

    folder = opts.folder(plan) / "%j"
    command = shlex.join([sys.executable, "-u", "-m", "submitit.core._submit", str(folder)])
    script = _make_sbatch_string(command=command, folder=folder, map_count=opts.array,
                                 **opts.executor_parameters(plan))  # fmt: skip
    shebang, script = script.split("\n", 1)
    return f"{shebang}\n{head}\n{script}"  # sbatch wants the #! line first


def _submitted_text(
    plan: StudyPlan, opts: LaunchOptions, jobs: list[Any], storage_url: str, tracking_uri: str
) -> str:
    ids = [job.job_id for job in jobs]
    shown = ", ".join(ids) if len(ids) <= 6 else f"{ids[0]} .. {ids[-1]}"
    storage = display_url(storage_url)
    what = "SLURM job array" if opts.launcher == "slurm" else "local processes"
    lines = [f"submitted {len(ids)} array task(s) of study {plan.name!r} as {what}: {shown}",
             f"logs: {opts.folder(plan)}", "follow the study:",
             f"  ablate study {plan.path} --status --storage {storage}",
             f"  optuna-dashboard {storage}",
             f"  mlflow ui --backend-store-uri {tracking_uri}   (or: ablate ui)"]  # fmt: skip
    if opts.launcher == "slurm":
        lines.append(f"  squeue --me --name ablate-{plan.name}")
    return "\n".join(lines)


def _wait(plan: StudyPlan, settings: RunSettings, parent: str, jobs: list[Any],
          quiet: bool) -> StudyOutcome:  # fmt: skip
    from ablate.study import state as st
    from ablate.study.report import Progress, summarize

    progress = Progress(plan, settings, enabled=not quiet)
    progress.start()
    try:
        returned, delay, look_at = _results(jobs), FIRST_POLL_S, time.monotonic()
        while True:
            # a task that returned may be requeued yet (scontrol requeue): only the queue says
            if (now_returned := _results(jobs)) != returned:
                returned, delay, look_at = now_returned, FIRST_POLL_S, time.monotonic()
            if time.monotonic() >= look_at:
                if not _in_queue(jobs):
                    break
                look_at, delay = time.monotonic() + delay, min(2 * delay, POLL_S)
            time.sleep(FIRST_POLL_S)
    finally:
        progress.stop()
    errors = [error for job in jobs if (error := _task_error(job))]
    ran = sum(t.state.is_finished() and not st.was_handed_over(t)  # every task and requeue
              and t.system_attrs.get(st.INVOCATION_ATTR) == settings.invocation
              for t in read_trials(settings.storage_url, plan.name))  # fmt: skip
    return summarize(plan, settings, parent, ran, errors)


def _results(jobs: list[Any]) -> tuple[float | None, ...]:
    """When each task last wrote its result (None: not yet); a requeued task writes it again."""
    times = []
    for job in jobs:
        try:
            times.append(job.paths.result_pickle.stat().st_mtime)
        except OSError:
            times.append(None)
    return tuple(times)


def _in_queue(jobs: list[Any]) -> bool:
    """Whether a task is pending, running or requeued: ``squeue`` for SLURM (``sacct``,
    which submitit asks less and less often, needs slurmdbd and misses requeues)."""
    from submitit.slurm.slurm import SlurmJob

    if not isinstance(jobs[0], SlurmJob):
        return not all(job.done() for job in jobs)
    ids = sorted({job.job_id.split("_")[0] for job in jobs})
    queue = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)],
                           capture_output=True, text=True)  # fmt: skip
    if queue.returncode != 0 and "Invalid job id" not in queue.stderr:
        return True  # slurmctld busy or restarting: look again later
    return bool(queue.stdout.strip())


def _task_error(job: Any) -> str | None:
    """Why a task ended before the study did (one line), or None."""
    log = job.paths.stderr
    if not job.paths.result_pickle.exists():
        return (f"array task {job.job_id} ended without a result (cancelled before it "
                f"started, or killed); see {log}")  # fmt: skip
    try:
        stopped = job.result()
    except Exception as err:  # the task's traceback is in its log
        first = " ".join(str(err).split())[:300]
        return f"array task {job.job_id} failed: {first} (log: {log})"
    return None if stopped is None else f"{stopped} (log: {log})"
