"""Synthetic MLflow stores for `ablate compare`, written through the real MlflowClient.

Runs follow the recorder's contract (ablate.tracking.conventions; step = epoch): curves
``<quantity>/val`` and ``alpha/value`` at 0..E, ``loss/train`` / ``acc/train`` /
``optim/lr`` at 1..E, and at step E ``test_*`` of the final weights (with ``test_epoch``,
``test_alpha``) plus ``best_test_*`` of the best-validation checkpoint (with ``best_epoch``,
``best_val_acc``, ``best_test_alpha``). Params are the effective configuration (``variant``,
``seed``, ``lr``, ...; ``alpha_schedule`` / ``alpha_start`` / ``alpha_end`` only where a
schedule drives alpha); tags only what is not config (``study``, ``role``, ``trial_state``,
``split``). Every number logged is also returned, so tests recompute expectations
independently of ablate.compare.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

from ablate.tracking import conventions as cv  # noqa: E402

EPOCHS = 6
SEEDS = (0, 1, 2, 3)
# True end levels; a seed shifts every variant's curve by the same offset (shared split,
# init and data order), which a paired analysis removes.
PLATEAU = {"softmax": 0.85, "softmax_v": 0.90, "alpha_remix": 0.84}
SEED_OFFSET = {0: -0.03, 1: 0.0, 2: 0.025, 3: 0.01, 4: -0.01, 9: 0.0}
NOISE = 0.004


def curve(variant: str, seed: int, epochs: int = EPOCHS, salt: int = 0) -> np.ndarray:
    """acc/val at steps 0..epochs: a saturating curve, a per-seed offset, a little noise."""
    rng = np.random.default_rng(1000 * seed + 7 * len(variant) + salt)
    e = np.arange(epochs + 1)
    level = PLATEAU.get(variant, 0.85) + SEED_OFFSET.get(seed, 0.0)
    values = level - (level - 0.1) * np.exp(-e / 1.5) + rng.normal(0.0, NOISE, size=e.size)
    return np.clip(values, 0.0, 1.0)


def log_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    variant: str,
    seed: int,
    val_acc: np.ndarray,
    status: str = "FINISHED",
    tested: bool = True,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    alpha: bool | None = None,
) -> dict[str, Any]:
    """Log one run; returns what was logged (run_id, arrays, end-of-run numbers).

    Args:
        val_acc: validation accuracy at epochs 0..E (the other curves derive from it);
            NaN values are logged as they are (a diverged run).
        status: FINISHED, RUNNING (no end-of-run numbers), FAILED, KILLED.
        tested: log the end-of-run test numbers (a FINISHED run).
        params: config params over a default set (variant, seed, lr, epochs, device, ...).
        alpha: an alpha schedule drives alpha (default: every variant but softmax).
    """
    alpha = variant != "softmax" if alpha is None else alpha
    val_acc = np.asarray(val_acc, dtype=float)
    run = client.create_run(experiment_id, run_name=f"{variant}-s{seed}", tags=tags or {})
    run_id = run.info.run_id
    epochs = len(val_acc) - 1
    ts = int(time.time() * 1000)
    alphas = np.linspace(0.0, 1.0, epochs + 1) if alpha else None
    val_loss = 2.5 * (1.0 - val_acc)
    metrics = []
    for step in range(epochs + 1):
        m = {
            cv.VAL_ACC: val_acc[step],
            cv.VAL_LOSS: val_loss[step],
            cv.curve("f1", "val"): val_acc[step] - 0.02,
            cv.curve("precision", "val"): val_acc[step] - 0.01,
            cv.curve("recall", "val"): val_acc[step] - 0.015,
        }
        if alphas is not None:
            m[cv.ALPHA] = alphas[step]
        if step >= 1:
            # the objective (label smoothing, MixUp) sits well above the clean loss/val
            m.update({cv.TRAIN_LOSS: val_loss[step] + 0.6, cv.TRAIN_ACC: val_acc[step] + 0.02,
                      cv.LR: 5e-4})  # fmt: skip
        metrics += [Metric(k, float(v), ts + step, step) for k, v in m.items()]
    finite = np.where(np.isfinite(val_acc[1:]), val_acc[1:], -np.inf)
    best_epoch = int(np.argmax(finite) + 1) if epochs else 0  # first max, epoch >= 1
    test_final = float(val_acc[-1] - 0.01)
    test_best = float(val_acc[best_epoch] - 0.012)
    end: dict[str, float] = {}
    if status == "FINISHED" and tested:
        end = {
            "test_acc": test_final,
            "test_loss": 2.5 * (1 - test_final),
            "test_f1": test_final - 0.02,
            "test_epoch": epochs,
            "best_test_acc": test_best,
            "best_test_loss": 2.5 * (1 - test_best),
            "best_epoch": best_epoch,
            "best_val_acc": float(val_acc[best_epoch]),
        }
        if alphas is not None:
            end.update(test_alpha=alphas[-1], best_test_alpha=alphas[best_epoch])
    metrics += [Metric(k, float(v), ts + epochs + 1, epochs) for k, v in end.items()]
    schedule = {"alpha_schedule": "linear", "alpha_start": "0.0", "alpha_end": "1.0"}
    config = {
        "variant": variant,
        "seed": str(seed),
        "model": "cct_2_3x2_32",
        "dataset": "digits",
        "apply_to": "attention",
        "lr": "0.0005",
        "epochs": str(EPOCHS),  # planned; a RUNNING or pruned run has logged fewer
        "device": "cpu",
        "data_dir": "./data",
        "run_name": f"{variant}-s{seed}",
        "n_params": "12345",
        "data.train_size": "1293",
        **(schedule if alpha else {}),
        **{k: str(v) for k, v in (params or {}).items()},
    }
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in config.items()])
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return {
        "run_id": run_id,
        "variant": variant,
        "seed": seed,
        "val_acc": val_acc,
        "alpha": alphas,
        "best_epoch": best_epoch,
        "test_final": test_final,
        "test_best": test_best,
        **end,
    }


# the digits split's sizes, as a run records them
DIGITS_SPLIT = {"data.test_size": "360", "data.val_size": "144", "data.train_size": "1293"}


def empty_store(tmp_path) -> tuple[str, MlflowClient, str]:
    """(uri, client, experiment id) of a fresh store in tmp_path, for a test's own runs."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment("ablate", artifact_location=(tmp_path / "art").as_uri())
    return uri, client, eid


@pytest.fixture(scope="session")
def make_run() -> Callable[..., dict[str, Any]]:
    """:func:`log_run`, for tests that build their own small store."""
    return log_run


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> dict[str, Any]:
    """One SQLite store shared by the compare tests.

    * ``ablate``: 3 variants x 4 seeds, all FINISHED; device and data_dir
      differ between runs (run-local: must not block pooling).
    * ``mixed``: softmax / softmax_v x 3 seeds, one softmax run still RUNNING (4 epochs),
      plus a FAILED, a pruned (KILLED) run and one on another data set.
    * ``lrs``: softmax x 3 seeds at two learning rates (must not be pooled silently).
    * study ``sweep``: parent in ``studies``, trials there and in ``studies-b``.
    """
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    art = (root / "artifacts").as_uri()
    out: dict[str, Any] = {"uri": uri, "client": client, "runs": {}}

    def exp(name: str) -> str:
        return client.create_experiment(name, artifact_location=f"{art}/{name}")

    main = exp("ablate")
    out["runs"]["ablate"] = [
        log_run(
            client,
            main,
            variant=v,
            seed=s,
            val_acc=curve(v, s),
            params={"device": "cuda" if s % 2 else "cpu", "data_dir": f"/data{s}"},
        )
        for v in PLATEAU
        for s in SEEDS
    ]

    mixed = exp("mixed")
    runs = []
    for v in ("softmax", "softmax_v"):
        for s in (0, 1, 2):
            running = v == "softmax" and s == 2
            runs.append(
                log_run(
                    client,
                    mixed,
                    variant=v,
                    seed=s,
                    val_acc=curve(v, s, epochs=4 if running else EPOCHS, salt=1),
                    status="RUNNING" if running else "FINISHED",
                )
            )
    out["runs"]["mixed"] = runs
    log_run(client, mixed, variant="softmax_v", seed=7, val_acc=curve("softmax_v", 7, 3),
            status="FAILED")  # fmt: skip
    out["pruned"] = log_run(
        client, mixed, variant="softmax_v", seed=8, val_acc=curve("softmax_v", 8, 2),
        status="KILLED", tags={"trial_state": "PRUNED"},
    )  # fmt: skip
    log_run(client, mixed, variant="softmax", seed=9, val_acc=curve("softmax", 9) - 0.3,
            params={"dataset": "cifar10"})  # fmt: skip

    lrs = exp("lrs")
    out["runs"]["lrs"] = [
        log_run(
            client,
            lrs,
            variant="softmax",
            seed=s,
            val_acc=curve("softmax", s, salt=3 + i),
            params={"lr": lr, "epochs": epochs},
        )  # fmt: skip
        for i, (lr, epochs) in enumerate((("0.0005", 6), ("0.001", 8)))
        for s in (0, 1, 2)
    ]

    studies, studies_b = exp("studies"), exp("studies-b")
    parent = client.create_run(studies, run_name="sweep", tags={"study": "sweep", "role": "study"})
    out["parent_id"] = parent.info.run_id
    study_tags = {"study": "sweep", "role": "trial", "mlflow.parentRunId": parent.info.run_id}
    runs = []
    for number, (v, s, e) in enumerate(
        [("softmax", 0, studies), ("softmax", 1, studies), ("softmax", 2, studies_b),
         ("softmax_v", 0, studies), ("softmax_v", 1, studies_b), ("softmax_v", 2, studies_b)]
    ):  # fmt: skip
        # Optuna's bookkeeping is tags, numeric ones too; never config
        tags = {**study_tags, "trial_state": "COMPLETE", "optuna.trial_number": str(number),
                "optuna.attempt": "0"}  # fmt: skip
        runs.append(log_run(client, e, variant=v, seed=s, val_acc=curve(v, s, salt=5), tags=tags))
    out["runs"]["sweep"] = runs
    log_run(client, studies_b, variant="softmax_v", seed=5, val_acc=curve("softmax_v", 5, 1),
            status="KILLED", tags={**study_tags, "trial_state": "PRUNED"})  # fmt: skip
    client.set_terminated(parent.info.run_id, "FINISHED")
    return out
