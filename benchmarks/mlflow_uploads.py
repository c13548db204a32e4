"""What the checkpoint upload policy costs the training thread, now that uploads are
synchronous (no background thread).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/mlflow_uploads.py [--repeats 5] [--every 30]

For cct_2_3x2_32 (digits) and cct_7_3x1_32 (CIFAR-10) it builds the real ``last.pt`` payload
(weights + AdamW state + RNG), writes it through :class:`ablate.tracking.recorder.Checkpoints`
into a real SQLite MLflow store with a local artifact store, and times, per epoch:

- ``write``: the local atomic write every epoch pays;
- ``upload``: one synchronous upload of ``last.pt`` + ``best.pt``;
- ``per epoch``: write + upload / K, the amortised cost at ``--every K`` (default 30).

A remote store (HTTP, S3) is slower per byte than this local one; the table gives the bytes
too, so the cost at another bandwidth is bytes / bandwidth / K.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

MiB = 2**20


def _payload(name: str, img_size: int, num_classes: int) -> dict:
    import torch

    from ablate.models import create_model
    from ablate.models.checkpoint import checkpoint_payload

    model = create_model(name, img_size=img_size, num_classes=num_classes)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(2, 3, img_size, img_size)).sum().backward()
    opt.step()  # AdamW's moment buffers exist only after a step
    return checkpoint_payload(model, optimizer=opt, extra={"rng_cpu": torch.get_rng_state()})


def _time(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=30)
    args = parser.parse_args()

    from ablate.tracking import Tracker
    from ablate.tracking.recorder import Checkpoints

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        for name, img_size in (("cct_2_3x2_32", 16), ("cct_7_3x1_32", 32)):
            payload = _payload(name, img_size, 10)
            tracker = Tracker.start(uri, "uploads", run_name=name)
            ckpt = Checkpoints(Path(tmp) / name, tracker, upload_every=0)
            ckpt.save_best(payload)
            write = _time(lambda: ckpt.save_last(payload, 1), args.repeats)

            def upload():
                ckpt._best_changed = True  # the worst case: best.pt changed too
                ckpt.upload()

            up = _time(upload, args.repeats)
            size = ckpt.last_path.stat().st_size + ckpt.best_path.stat().st_size
            rows.append((name, size / MiB, write * 1e3, up * 1e3, (write + up / args.every) * 1e3))
    print(f"{'model':<14} {'MiB up':>7} {'write ms':>9} {'upload ms':>10} "
          f"{'per epoch ms (K=' + str(args.every) + ')':>22}")
    for name, mib, write, up, per_epoch in rows:
        print(f"{name:<14} {mib:>7.1f} {write:>9.1f} {up:>10.1f} {per_epoch:>22.1f}")


if __name__ == "__main__":
    main()
