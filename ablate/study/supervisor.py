"""``ablate study``'s main process: prepare the study, start the workers, summarise.

One worker runs in this process; ``--workers N`` spawns N worker processes (never forked:
they would inherit database connections). Worker i trains on ``devices[i % len(devices)]``
(default: every visible GPU, round-robin; ``--workers-per-device K`` runs K trials per
GPU at once) with CPU threads split evenly over the cores this process may use (its CPU
affinity mask, which SLURM and cgroups set), so workers never oversubscribe the machine.
SIGTERM, SIGINT and SIGUSR1 (:mod:`ablate.trial.stopping`) stop every worker between training
steps: each running trial's MLflow run ends KILLED with its ``stop_reason`` and the trial is
handed over (:mod:`ablate.study.recovery`), so the same command, run again here or on any
machine sharing the storage, resumes it in the same MLflow run from its last checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from ablate.exceptions import AblateError, ConfigError, Stopped
from ablate.study.common import RunSettings, StudyOutcome
from ablate.study.parent import prepare_study
from ablate.study.spec import StudyPlan
from ablate.study.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, resolve_storage_url
from ablate.study.worker import run_worker, worker_process
from ablate.trial.stopping import StopSignals

__all__ = ["run_study", "default_devices", "usable_cpus"]


def default_devices() -> tuple[str, ...]:
    """Every visible GPU (``CUDA_VISIBLE_DEVICES`` applies), or none on a CPU machine."""
    import torch

    if not torch.cuda.is_available():
        return ()
    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))


def usable_cpus() -> int:
    """Cores this process may run on (the affinity mask), not all cores of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _parse_devices(devices: str | None) -> tuple[str, ...]:
    if devices is None:
        return default_devices()
    from ablate.trial.loop import resolve_device

    names = tuple(d.strip() for d in devices.split(",") if d.strip())
    if not names:
        raise ConfigError("--devices: give a comma-separated list, e.g. cuda:0,cuda:1")
    for name in names:
        try:
            resolve_device(name)
        except (ConfigError, RuntimeError) as err:
            raise ConfigError(f"--devices: {err}") from None
    return names


def run_study(
    plan: StudyPlan, *, storage: str | None = None, tracking_uri: str | None = None,
    workers: int | None = None, devices: str | None = None, workers_per_device: int = 1,
    max_trials: int | None = None, timeout: float | None = None, quiet: bool = False,
    heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD,
    poll_interval: float = 2.0,
) -> StudyOutcome:  # fmt: skip
    """Create or resume ``plan``'s study and run it until done (or a limit) on this machine.

    The arguments are the flags of ``ablate study`` (:class:`ablate.study.StudyOptions`),
    with the same defaults and checks; ``storage`` and ``tracking_uri`` default to the study
    file's. ``heartbeat_interval`` / ``grace_period``: crash detection, in seconds;
    ``poll_interval``: seconds an idle worker waits for other workers' trials.
    """
    from ablate.study.report import Progress, summarize
    from ablate.tracking import resolve_tracking_uri

    for flag, value in (("--workers", workers), ("--trials", max_trials),
                        ("--workers-per-device", workers_per_device)):  # fmt: skip
        if value is not None and value < 1:
            raise ConfigError(f"{flag}: must be >= 1, got {value}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout: must be > 0 seconds, got {timeout:g}")
    device_list = _parse_devices(devices)
    if workers is None:
        workers = workers_per_device * max(1, len(device_list))
    timeout = timeout if timeout is not None else plan.spec.timeout
    if not plan.is_grid and plan.spec.n_trials is None and timeout is None and max_trials is None:
        raise ConfigError(f"{plan.path}: n_trials: a search study needs n_trials or timeout (or "
                          "run it with --trials N / --timeout S)")  # fmt: skip
    url = resolve_storage_url(storage or plan.spec.storage)
    if workers > 1 and url.startswith("sqlite") and ":memory:" in url:
        raise ConfigError("--workers: an in-memory SQLite storage cannot be shared by worker "
                          "processes")  # fmt: skip
    settings = RunSettings(
        storage_url=url, workers=workers, devices=device_list, max_trials=max_trials,
        tracking_uri=resolve_tracking_uri(tracking_uri or plan.base.get("tracking_uri")),
        # N processes share the cores instead of oversubscribing them; OMP_NUM_THREADS wins
        threads=None if "OMP_NUM_THREADS" in os.environ else max(1, usable_cpus() // workers),
        deadline=None if timeout is None else time.time() + timeout,
        heartbeat_interval=heartbeat_interval, grace_period=grace_period,
        poll_interval=poll_interval,
    )  # fmt: skip
    parent = prepare_study(plan, settings)
    progress = Progress(plan, settings, enabled=not quiet)
    result: tuple[int, list[str]] = (0, [])
    progress.start()
    try:
        result = _run_workers(plan, settings)
    finally:
        progress.stop()
        outcome = summarize(plan, settings, parent, *result)
    return outcome


def _run_workers(plan: StudyPlan, settings: RunSettings) -> tuple[int, list[str]]:
    """The worker(s) of this command, under stop-signal handling; (trials run, errors)."""
    try:
        with StopSignals():
            if settings.workers > 1:
                return _run_processes(plan, settings)
            try:
                return run_worker(plan, settings, 0), []
            except AblateError as err:
                return 0, [str(err)]
    except Stopped as err:
        print(f"ablate study: {err}: running trials were handed over; run the same command "
              "again (here or on any machine sharing the storage) to resume them from their "
              "last checkpoints", file=sys.stderr, flush=True)  # fmt: skip
        raise


def _run_processes(plan: StudyPlan, settings: RunSettings) -> tuple[int, list[str]]:
    import multiprocessing
    import queue as queue_module

    ctx = multiprocessing.get_context("spawn")  # never fork a process holding DB connections
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_process, args=(plan, settings, i, results),
                         name=f"ablate-study-worker-{i}") for i in range(settings.workers)]
    for p in procs:
        p.start()
    interrupted: KeyboardInterrupt | None = None
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.5)
    except KeyboardInterrupt as err:
        interrupted = err
        # Ctrl-C in a terminal (or a scheduler's SIGTERM to the process group) reached the
        # workers too; give them a moment to hand their trials over and close their MLflow
        # runs, then ask the others to stop.
        end = time.time() + 10
        for p in procs:
            p.join(timeout=max(0.0, end - time.time()))
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()  # its trial is failed as dead at the next start
    ran, errors, reported = 0, [], set()
    while True:
        try:
            index, status, count, message = results.get(timeout=0.2)
        except (queue_module.Empty, EOFError, OSError):
            break
        reported.add(index)
        ran += count
        if status == "error":
            errors.append(message)
        elif status == "crash":
            errors.append(f"worker {index} crashed: {message} (traceback above)")
    for index, p in enumerate(procs):
        if index in reported or interrupted is not None:
            continue
        how = (f"was killed by signal {-p.exitcode}" if (p.exitcode or 0) < 0
               else f"exited with status {p.exitcode}")  # fmt: skip
        errors.append(f"worker {index} {how} before reporting (see its output above); rerun the "
                      "command to finish the study")  # fmt: skip
    if interrupted is not None:
        raise interrupted
    return ran, errors
