"""What a preemption costs a study trial: seconds of work lost, measured end to end.

Starts ``ablate study`` on a one-cell study (its own process group, as SLURM runs it), waits
until ``--stop-after`` epochs are logged, lets the next epoch run for ``--fraction`` of an
epoch, sends ``--signal`` to the whole group, then reruns the command and times the resume:

    stop latency   signal -> the command has exited (trial handed over, run KILLED)
    work lost      signal - end of the last checkpointed epoch (the abandoned partial epoch)
    restart cost   rerun start -> resumed training starts (process, data, model, checkpoint)
    total          work lost + restart cost (compute a preemption really costs)
    from scratch   what the same stop cost before issue 17 (SIGTERM restarted the trial):
                   every finished epoch again, plus the restart

    python benchmarks/preemption_cost.py --epochs 8 --stop-after 3 --fraction 0.5
    python benchmarks/preemption_cost.py --signal SIGINT --json preemption.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from ablate.tracking.conventions import EPOCH_SECONDS, VAL_ACC  # noqa: E402

STUDY = """\
name: preempt
base:
  dataset: {dataset}
  epochs: {epochs}
  batch_size: {batch_size}
  checkpoint_dir: checkpoints
  system_metrics: false
grid:
  seed: [0]
"""


def _start(workdir: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ablate.cli", "study", "study.yaml"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _history(client, run_id: str, key: str) -> dict[int, tuple[float, float]]:
    """step -> (value, wall time in s)."""
    return {m.step: (m.value, m.timestamp / 1000) for m in client.get_metric_history(run_id, key)}


def _wait(proc: subprocess.Popen, client, workdir: Path, until_step: int, log: Path) -> str:
    while True:
        time.sleep(0.05)
        if proc.poll() is not None:
            sys.exit(f"the study ended early:\n{log.read_text()[-3000:]}")
        folder = workdir / "checkpoints"
        runs = list(folder.iterdir()) if folder.exists() else []
        if not runs:
            continue
        try:
            if max(_history(client, runs[0].name, VAL_ACC), default=-1) >= until_step:
                return runs[0].name
        except Exception:  # tables being created
            continue


def measure(args: argparse.Namespace) -> dict[str, float]:
    from mlflow import MlflowClient

    workdir = Path(tempfile.mkdtemp(prefix="ablate-preempt-"))
    (workdir / "study.yaml").write_text(
        STUDY.format(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size)
    )
    log = workdir / "study.log"
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    proc = _start(workdir, log)
    run_id = _wait(proc, client, workdir, args.stop_after, log)
    seconds = _history(client, run_id, EPOCH_SECONDS)
    epoch_s = seconds[args.stop_after][0]
    time.sleep(args.fraction * epoch_s)  # into the next epoch
    t_signal = time.time()
    os.killpg(proc.pid, getattr(signal, args.signal))
    proc.wait(timeout=300)
    t_exit = time.time()
    before = _history(client, run_id, VAL_ACC)
    last = max(before)
    lost = t_signal - before[last][1]

    t_rerun = time.time()
    proc = _start(workdir, log)
    proc.wait(timeout=3600)
    after_val = _history(client, run_id, VAL_ACC)
    after_s = _history(client, run_id, EPOCH_SECONDS)
    first = last + 1  # the first epoch trained by the rerun
    restart = (after_val[first][1] - after_s[first][0]) - t_rerun
    trained_before = sum(after_s[e][0] for e in range(1, last + 1))
    run = client.get_run(run_id)
    return {
        "signal": args.signal,
        "epoch_seconds": round(epoch_s, 2),
        "stopped_in_epoch": first,
        "resumed_from_epoch": int(run.data.tags.get("resumed_from_epoch", -1)),
        "stop_latency_s": round(t_exit - t_signal, 2),
        "work_lost_s": round(lost, 2),
        "restart_cost_s": round(restart, 2),
        "total_cost_s": round(lost + restart, 2),
        "from_scratch_cost_s": round(lost + trained_before + restart, 2),
        "epochs_logged_once": sorted(after_val) == list(range(args.epochs + 1)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--stop-after", type=int, default=3, help="epochs logged before the stop")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="how far into the next epoch the signal comes")  # fmt: skip
    parser.add_argument("--signal", default="SIGTERM", choices=("SIGTERM", "SIGINT", "SIGUSR1"))
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args()
    result = measure(args)
    for key, value in result.items():
        print(f"{key:22s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
