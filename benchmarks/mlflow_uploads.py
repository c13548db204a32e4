"""Artifact bytes a run uploads to MLflow, before and after the upload policy, and what
logging costs per epoch.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/mlflow_uploads.py [--epochs 6] [--out results.json]

Measured (cct_2_3x2_32 on the embedded digits, CPU, a real SQLite store + local artifact
store in a temporary folder):

- ``before``: the resume checkpoint (and a changed best.pt) uploaded synchronously after
  every epoch, as ablate did before (reproduced with ``--checkpoint-upload-every 1`` and a
  blocking upload), no logged models;
- ``after``: the default policy (every 30 epochs and at the end, in a background thread),
  plus the two logged models (final and best weights, safetensors).

Every byte handed to the artifact repository is counted (the local repository's
``log_artifact`` / ``log_artifacts``), and the training thread's time in each logging call
is summed per epoch. cct_7_3x1_32 (CIFAR-10, 300 epochs, ``studies/cct7_cifar10.yaml``) is
done by arithmetic from its exact checkpoint sizes (weights, and weights + AdamW state).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

MiB = 2**20


@contextmanager
def _counting():
    """Count bytes given to the local artifact repository, and time the logging calls."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from ablate.tracking import Tracker
    from ablate.tracking.checkpoint_uploads import CheckpointUploads
    from ablate.tracking.checkpoints import Checkpointer

    stats: dict = {"bytes": defaultdict(int), "seconds": defaultdict(float)}
    saved = {}

    def count(cls, name, key_of):
        orig = getattr(cls, name)
        saved[(cls, name)] = orig

        def wrapper(self, local, artifact_path=None, *a, **k):
            p = Path(local)
            files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
            stats["bytes"][key_of(artifact_path, files)] += sum(f.stat().st_size for f in files)
            return orig(self, local, artifact_path, *a, **k)

        setattr(cls, name, wrapper)

    def kind(artifact_path, files):
        if any(f.name == "model.safetensors" for f in files):
            return "logged_models"
        if artifact_path == "checkpoints":
            return "checkpoints/" + files[0].name
        return "other (figures, config)"

    count(LocalArtifactRepository, "log_artifact", kind)
    count(LocalArtifactRepository, "log_artifacts", kind)

    def timed(cls, name, label):
        orig = getattr(cls, name)
        saved[(cls, name)] = orig

        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                stats["seconds"][label] += time.perf_counter() - start

        setattr(cls, name, wrapper)

    timed(Tracker, "log_metrics", "log_metrics")
    timed(Checkpointer, "save_last", "save_last (local, atomic)")
    timed(Checkpointer, "save_best", "save_best (local, atomic)")
    timed(CheckpointUploads, "after_epoch", "upload (training thread)")
    try:
        yield stats
    finally:
        for (cls, name), orig in saved.items():
            setattr(cls, name, orig)


@contextmanager
def _old_policy():
    """Every epoch, upload and wait (what ablate did before the policy)."""
    from ablate.tracking.checkpoint_uploads import CheckpointUploads

    orig = CheckpointUploads.after_epoch

    def blocking(self, epoch):  # noqa: ARG001 - every epoch
        self.upload_now()

    CheckpointUploads.after_epoch = blocking
    try:
        yield
    finally:
        CheckpointUploads.after_epoch = orig


def _one_run(policy: str, epochs: int, root: Path) -> dict:
    from ablate.cli import main

    folder = root / policy
    folder.mkdir()
    os.chdir(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    args = ["run", "--epochs", str(epochs), "--img-size", "8", "--quiet",
            "--system-metrics-interval", "5"]
    if policy == "before":
        args += ["--checkpoint-upload-every", "1"]
    with _old_policy() if policy == "before" else nullcontext(), _counting() as stats:
        start = time.perf_counter()
        assert main(args) == 0
        wall = time.perf_counter() - start
    if policy == "before":
        stats["bytes"].pop("logged_models", None)  # the old code logged none
    return {
        "bytes": dict(stats["bytes"]),
        "total_bytes": sum(stats["bytes"].values()),
        "seconds_per_epoch": {k: v / epochs for k, v in stats["seconds"].items()},
        "wall_seconds": wall,
    }


def _checkpoint_sizes(name: str, num_classes: int, img_size: int) -> dict:
    """Exact bytes of the weights and of last.pt (weights + AdamW state) of a model."""
    import torch

    from ablate.models import create_model
    from ablate.models.checkpoint import checkpoint_payload

    model = create_model(name, num_classes=num_classes, img_size=img_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(2, 3, img_size, img_size)).sum().backward()
    opt.step()

    def size(obj):
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.tell()

    return {
        "params": sum(p.numel() for p in model.parameters()),
        "weights": size(checkpoint_payload(model)),
        "last": size(checkpoint_payload(model, optimizer=opt)),
    }


def _arithmetic(sizes: dict, epochs: int = 300, every: int = 30, best_updates: int = 60) -> dict:
    """Uploaded bytes of one long run; ``best_updates``: epochs that improved val_acc."""
    uploads = len(range(every, epochs + 1, every)) or 1
    before = epochs * sizes["last"] + best_updates * sizes["weights"]
    after = uploads * sizes["last"] + min(uploads, best_updates) * sizes["weights"]
    after += 2 * sizes["weights"]  # the final and best logged models
    return {"epochs": epochs, "uploads_after": uploads, "best_updates_assumed": best_updates,
            "before_bytes": before, "after_bytes": after, "ratio": before / after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ablate-uploads-") as tmp:
        runs = {p: _one_run(p, args.epochs, Path(tmp)) for p in ("before", "after")}
    os.chdir(here)
    cct2 = _checkpoint_sizes("cct_2_3x2_32", 10, 32)
    cct7 = _checkpoint_sizes("cct_7_3x1_32", 10, 32)
    result = {
        "measured_cct_2_digits": runs,
        "cct_2_3x2_32_sizes": cct2,
        "cct_7_3x1_32_sizes": cct7,
        "cct_2_300_epochs": _arithmetic(cct2),
        "cct_7_300_epochs": _arithmetic(cct7),
        "cct7_cifar10_study_runs": 12,
    }
    study = result["cct_7_300_epochs"]
    result["cct7_cifar10_study_GiB"] = {
        k: 12 * study[f"{k}_bytes"] / 2**30 for k in ("before", "after")
    }
    print(f"cct_2_3x2_32 on digits, {args.epochs} epochs (measured):")
    for policy, r in runs.items():
        print(f"  {policy:6s} {r['total_bytes'] / MiB:8.2f} MiB uploaded  "
              + ", ".join(f"{k} {v / MiB:.2f}" for k, v in sorted(r["bytes"].items())))
        print("         per epoch: " + ", ".join(
            f"{k} {1000 * v:.1f} ms" for k, v in sorted(r["seconds_per_epoch"].items())))
    for name in ("cct_2_300_epochs", "cct_7_300_epochs"):
        a = result[name]
        print(f"{name} (arithmetic): before {a['before_bytes'] / MiB:.0f} MiB, after "
              f"{a['after_bytes'] / MiB:.0f} MiB ({a['ratio']:.0f}x less)")
    print(f"cct_7 sizes: weights {cct7['weights'] / MiB:.1f} MiB, last.pt "
          f"{cct7['last'] / MiB:.1f} MiB")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
