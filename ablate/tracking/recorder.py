"""The recorder: everything one trial leaves behind, written from one place.

A trial calls it a handful of times (:func:`ablate.trial.run.run_trial`)::

    recorder = Recorder.open(cfg, name=..., tags=..., parent_run_id=..., resume_run_id=...)
    with recorder:                        # the run ends with the status the block earned
        first = recorder.start(loop, config, bundle)   # or recorder.resume(loop, bundle)
        fit(loop, first, recorder.after_epoch)          # per epoch: best, checkpoint, metrics
        recorder.finish(final, best, bundle)            # test metrics, models, figures

What it writes:

- **params**: the effective configuration, each setting once with the value that ran
  (:func:`ablate.trial.run.effective_config`); the same mapping is ``config.yaml`` and the
  checkpoints' ``config``;
- **tags**: MLflow's own run context, the validation/test provenance (``split``), the SDPA
  kernel that ran, the parameter count, and the study's tags;
- **metrics** per epoch (names in :mod:`.conventions`: ``acc/val``, ``loss/train``, ...),
  and at the end ``test_*`` / ``best_*`` linked to their logged model and data set;
- **checkpoints** (:class:`Checkpoints`): ``last.pt`` every epoch and ``best.pt`` when the
  validation accuracy improves, uploaded every K epochs, at the end and on a stop;
- **data sets and logged models** (:mod:`.models`), **figures** (below),
  **system metrics** (MLflow's monitor), one **progress line** per epoch outside a terminal;
- **the end**: FINISHED; KILLED with ``trial_state=PRUNED`` for a pruned trial or with
  ``stop_reason`` for a stop signal; FAILED with ``failure_reason``. The exception goes on.

Each epoch's row is checkpointed before it is logged; rows a killed run checkpointed but
never logged are logged on resume, so every epoch appears exactly once in the history.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ablate.exceptions import CheckpointError
from ablate.models.checkpoint import atomic_torch_save, checkpoint_payload
from ablate.models.pretrained import read_checkpoint
from ablate.tracking import conventions as cv
from ablate.tracking.conventions import ARTIFACT_DIR, BEST, EXPORTED, LAST, PREVIOUS
from ablate.tracking.tracker import Tracker, system_metrics_monitor

if TYPE_CHECKING:
    import torch.nn as nn

    from ablate.config import RunConfig
    from ablate.data import DataBundle
    from ablate.trial.loop import Loop

__all__ = [
    "Recorder", "Tested", "Best", "Checkpoints", "read_state", "confusion_matrix_figure",
    "learning_curve_figure",
]




@dataclass
class Tested:
    """One model's test-split numbers and where the weights came from."""

    model: "nn.Module"
    metrics: dict[str, float]  # loss, acc, precision, recall, f1
    epoch: int
    alpha: float | None
    val_acc: float
    predictions: Any = None  # (N,) predicted classes, for the confusion matrix


@dataclass
class Best:
    """The best-validation epoch so far. With an alpha schedule only epochs validated at its
    end value compete, once there is one (``restricted``), so a softmax_v run is never
    tested at alpha 0.23."""

    epoch: int = 0
    val_acc: float = -1.0
    restricted: bool = False

    def offer(self, epoch: int, val_acc: float, at_end: bool) -> bool:
        """Consider ``epoch``; True when it is the new best."""
        if at_end and not self.restricted:
            self.restricted = True  # earlier epochs are no longer candidates
            self.epoch, self.val_acc = 0, -1.0
        if self.restricted and not at_end:
            return False
        if val_acc > self.val_acc:
            self.epoch, self.val_acc = epoch, val_acc
            return True
        return False


@dataclass
class Recorder:
    """Records one trial in one MLflow run. Make it with :meth:`open`.

    Attributes:
        tracker: the MLflow run.
        checkpoints: its local and uploaded checkpoint files.
        history: one metric row per finished epoch, 0..E.
        best: the best-validation epoch so far.
    """

    tracker: Tracker
    checkpoints: Checkpoints
    cfg: "RunConfig"
    name: str
    on_epoch: Callable[[int, dict], None] | None = None
    standalone: bool = True  # not a study trial: a stop prints how to resume it
    history: list[dict[str, float]] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    at_end: Callable[[Mapping[str, float]], bool] = lambda row: True
    config: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)  # split -> (name, digest)
    _loop: "Loop | None" = None
    _logged: set[int] = field(default_factory=set)
    _progress: Any = None
    _monitor: Any = None

    @classmethod
    def open(
        cls,
        cfg: "RunConfig",
        *,
        name: str,
        tags: Mapping[str, Any],
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
        on_epoch: Callable[[int, dict], None] | None = None,
    ) -> "Recorder":
        """Open the trial's run: a new one, or ``resume_run_id`` again (marked RUNNING)."""
        if resume_run_id:
            tracker = Tracker.attach(cfg.tracking_uri, resume_run_id)
        else:
            tracker = Tracker.start(
                cfg.tracking_uri, cfg.experiment, run_name=name, tags=tags,
                parent_run_id=parent_run_id,
            )
        folder = Path(cfg.checkpoint_dir) / tracker.run_id
        checkpoints = Checkpoints(folder, tracker, cfg.checkpoint_upload_every)
        return cls(tracker, checkpoints, cfg, name, on_epoch, standalone=parent_run_id is None)

    # -- the run's lifetime -------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        if self.cfg.system_metrics:
            self._monitor = system_metrics_monitor(
                self.tracker.run_id, self.tracker.tracking_uri, self.cfg.system_metrics_interval
            )
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        """End the run with the status the block earned; the exception always goes on."""
        from ablate.exceptions import AblateError, Pruned

        self._close_progress()
        try:
            if err is not None and not isinstance(err, Pruned):
                self.checkpoints.upload()  # a stop / error: the newest epoch reaches MLflow
            if err is None:
                self.tracker.end(cv.FINISHED)
            elif isinstance(err, Pruned):
                self.tracker.set_trial_state("PRUNED")
                self.tracker.end(cv.KILLED)
            elif isinstance(err, KeyboardInterrupt):  # Ctrl-C, or a stop signal (Stopped)
                self.tracker.stop(getattr(err, "reason", "user"), self._stop_message(err))
            else:
                user_facing = isinstance(err, AblateError)
                self.tracker.end(cv.FAILED, str(err) if user_facing else f"{kind.__name__}: {err}")
        finally:
            if self._monitor is not None:
                self._monitor.finish()

    def _stop_message(self, err: BaseException) -> str:
        message = str(err) or "interrupted"
        if self.standalone:  # a study resumes its trials itself
            message += f" (resume with: ablate run --resume {self.tracker.run_id})"
        return message

    # -- the start --------------------------------------------------------------------
    def start(
        self,
        loop: "Loop",
        config: Mapping[str, Any],
        bundle: "DataBundle",
        *,
        tags: Mapping[str, Any] = {},
        at_end: Callable[[Mapping[str, float]], bool] | None = None,
        source_model: str | None = None,
    ) -> int:
        """A new run: params and ``config.yaml`` (the effective configuration), data sets
        and the logged model the initial weights came from (``source_model``, its id) as
        inputs, tags and the variant file; returns the first epoch to run (0)."""
        import yaml

        from ablate.tracking.models import log_datasets

        self._attach(loop, config, bundle, at_end)
        self.tracker.log_params(self.config)
        self.tracker.log_text(yaml.safe_dump(self.config, sort_keys=False), "config.yaml")
        self.datasets = log_datasets(self.tracker, bundle, source_model=source_model)
        self.tracker.set_tags(tags)
        if self.cfg.variant_file:
            self.tracker.log_artifact(self.cfg.variant_file, "code")
        return 0

    def resume(
        self,
        loop: "Loop",
        config: Mapping[str, Any],
        bundle: "DataBundle",
        *,
        at_end: Callable[[Mapping[str, float]], bool] | None = None,
    ) -> int:
        """Continue the run from its newest readable checkpoint (local, else uploaded);
        returns the first epoch still to run."""
        from ablate.exceptions import AblateError
        from ablate.tracking.models import log_datasets

        self._attach(loop, config, bundle, at_end)
        self.datasets = log_datasets(self.tracker, bundle, log=False)  # logged at the start
        state = self.checkpoints.load_last()
        if state is None:
            raise AblateError(
                f"run {self.tracker.run_id} has no readable last checkpoint to resume from "
                f"(looked in {self.checkpoints.folder} and the run's artifacts)"
            )
        loop.restore(state)
        self.best = Best(**state["best"])
        self.history = [dict(row) for row in state["history"]]
        # Rows checkpointed by a run killed before it logged them are logged now. Epochs
        # logged after the checkpoint resumed from (when last.pt was unreadable and its
        # predecessor was used) are trained again but not logged again.
        self._logged = {step for step, _ in self.tracker.metric_history(cv.VAL_ACC)}
        for epoch, row in enumerate(self.history):
            if epoch not in self._logged:
                self.tracker.log_metrics(row, step=epoch)
                self._logged.add(epoch)
            if self.on_epoch is not None:  # the caller's view of the curve so far
                self.on_epoch(epoch, row)
        self.tracker.set_tags({"resumed_from_epoch": state["epoch"]})
        return int(state["epoch"]) + 1

    def _attach(self, loop: "Loop", config: Mapping[str, Any], bundle: "DataBundle",
                at_end: Callable[[Mapping[str, float]], bool] | None) -> None:
        self._loop = loop
        self.config = dict(config)
        self.bundle = bundle
        if at_end is not None:
            self.at_end = at_end

    # -- each epoch ---------------------------------------------------------------------
    def after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """An epoch is validated: select the best, checkpoint, log, report progress."""
        from ablate.trial.stopping import critical

        with critical():  # a stop signal waits: never a checkpoint without its logged row
            self.history.append(row)
            if epoch > 0:
                if self.best.offer(epoch, row[cv.VAL_ACC], self.at_end(row)):
                    self.checkpoints.save_best(self._payload(epoch, best=True))
                self.checkpoints.save_last(self._payload(epoch), epoch)  # before the log
            if epoch not in self._logged:
                self.tracker.log_metrics(row, step=epoch)
                self._logged.add(epoch)
        if epoch > 0:
            self._report(epoch, row)
        if self.on_epoch is not None:
            self.on_epoch(epoch, row)

    def _payload(self, epoch: int, best: bool = False) -> dict[str, Any]:
        loop = self._loop
        if best:  # the evaluation weights and the alpha they were validated at
            model = loop.eval_model()
            return checkpoint_payload(model, extra={
                "config": self.config, "epoch": epoch, "val_acc": self.best.val_acc,
                "variant_params": dict(model.variant_params()),
            })
        extra = loop.state()
        extra.update(epoch=epoch, best=vars(self.best).copy(), config=self.config,
                     history=[dict(r) for r in self.history])
        return checkpoint_payload(loop.model, optimizer=loop.opt, scheduler=loop.sched,
                                  extra=extra)

    def _report(self, epoch: int, row: Mapping[str, float]) -> None:
        """A tqdm bar in a terminal; one plain line per epoch in a log file (SLURM, CI)."""
        if self.cfg.quiet:
            return
        shown = {"loss": row.get(cv.TRAIN_LOSS), "val_acc": row.get(cv.VAL_ACC),
                 "alpha": row.get(cv.ALPHA)}
        shown = {k: f"{v:.3f}" for k, v in shown.items() if v is not None}
        if sys.stderr.isatty() and sys.stdout.isatty():
            if self._progress is None:
                from tqdm.auto import tqdm

                self._progress = tqdm(total=self.cfg.epochs, initial=epoch - 1, unit="epoch",
                                      desc=self.name[:40], dynamic_ncols=True)
            self._progress.update(1)
            self._progress.set_postfix(**shown)
            return
        fields = "  ".join(f"{k} {v}" for k, v in shown.items())
        seconds = row.get(cv.EPOCH_SECONDS, 0.0)
        print(f"{self.name}: epoch {epoch}/{self.cfg.epochs}  {fields}  ({seconds:.1f} s/epoch)",
              file=sys.stderr, flush=True)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    # -- the end ------------------------------------------------------------------------
    def best_state(self) -> dict[str, Any]:
        """The best-validation checkpoint (weights and the variant parameters they ran at)."""
        return self.checkpoints.load_best()

    def finish(self, final: Tested, best: Tested, *, export: bool = False) -> None:
        """Test metrics, logged models, figures, the fine-tuned export; then the final
        upload and, unless ``--keep-checkpoints``, the local files go."""
        from ablate.tracking.models import log_trial_models

        self._close_progress()
        metrics = {f"test_{k}": v for k, v in final.metrics.items()}
        metrics["test_epoch"] = final.epoch
        metrics.update({f"best_test_{k}": v for k, v in best.metrics.items()})
        metrics.update(best_val_acc=best.val_acc, best_epoch=best.epoch)
        if final.alpha is not None:
            metrics["test_alpha"] = final.alpha
        if best.alpha is not None:
            metrics["best_test_alpha"] = best.alpha
        log_trial_models(
            self.tracker, config=self.config, datasets=self.datasets,
            metrics=metrics, epochs=final.epoch, name=self.name,
            final=(final.model, final.alpha, final.val_acc),
            best=(best.model, best.epoch, best.alpha, best.val_acc),
            example=self.bundle.eval_transform(self.bundle.test.x[:2]),  # the signature
        )
        self.tracker.set_tags({"best_selection": "epochs at the schedule's end value"
                               if self.best.restricted else "all epochs"})
        self._log_figures(final)
        if export:
            from ablate.finetune import export_model

            path = export_model(final.model, self.checkpoints.folder / EXPORTED, self.cfg)
            self.tracker.log_artifact(path, ARTIFACT_DIR)
        self.checkpoints.upload()
        if not self.cfg.keep_checkpoints:
            self.checkpoints.remove()

    def _log_figures(self, final: Tested) -> None:
        import matplotlib.pyplot as plt

        bundle = self.bundle
        true = bundle.test.y.cpu().numpy()
        title = f"{self.name}: test, final weights (epoch {final.epoch})"
        figures = {
            "figures/confusion_matrix.png": confusion_matrix_figure(
                true, final.predictions, bundle.class_names, title=title
            ),
            "figures/learning_curves.png": learning_curve_figure(
                self.history, title=f"{self.name} ({bundle.name})"
            ),
        }
        for path, fig in figures.items():
            self.tracker.log_figure(fig, path)
            plt.close(fig)


# -- checkpoints -------------------------------------------------------------------------
# last.pt is about 3x the weights, so it is uploaded only every --checkpoint-upload-every K
# epochs (default 30), at the end and on a stop. The upload is synchronous: at K = 30 it adds
# 0.2 ms per epoch for cct_2 and 4.5 ms for cct_7 on a local store
# (benchmarks/mlflow_uploads.py); a background thread cost more code than it saved time.


def read_state(path: str | Path) -> dict[str, Any] | None:
    """A training state (a checkpoint dict with ``model``), or None when unreadable."""
    state = read_checkpoint(path, unreadable="none")
    return state if isinstance(state, dict) and "model" in state else None


class Checkpoints:
    """The last / best checkpoints of one run, local and uploaded.

    Args:
        folder: ``<checkpoint_dir>/<run_id>``.
        tracker: the run whose ``checkpoints/`` artifacts receive the uploads (None: local only).
        upload_every: upload ``last.pt`` every K epochs (0: only at the end or on a stop).
    """

    def __init__(
        self, folder: str | Path, tracker: "Tracker | None" = None, upload_every: int = 0
    ):
        self.folder = Path(folder)
        self.tracker = tracker
        self.upload_every = max(0, int(upload_every))
        self._best_changed = False

    @property
    def last_path(self) -> Path:
        return self.folder / LAST

    @property
    def best_path(self) -> Path:
        return self.folder / BEST

    # -- writing -----------------------------------------------------------------------
    def save_last(self, payload: Mapping[str, Any], epoch: int) -> None:
        """Write the resumable state of ``epoch`` (and upload it when an upload is due)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.last_path.is_file():
            os.replace(self.last_path, self.folder / PREVIOUS)
        atomic_torch_save(payload, self.last_path)
        if self.upload_every and epoch % self.upload_every == 0:
            self.upload()

    def save_best(self, payload: Mapping[str, Any]) -> None:
        atomic_torch_save(payload, self.best_path)
        self._best_changed = True

    def upload(self) -> None:
        """``last.pt`` (and ``best.pt`` when it changed) to the run's artifacts; a failure
        is a warning, retried at the next upload point."""
        if self.tracker is None:
            return
        files = [p for p in (self.last_path,) if p.is_file()]
        if self._best_changed and self.best_path.is_file():
            files.append(self.best_path)
        try:
            for path in files:
                self.tracker.log_artifact(path, ARTIFACT_DIR)
        except Exception as err:  # noqa: BLE001 - the store may be down; training goes on
            first = " ".join(str(err).split())[:200]
            warnings.warn(
                f"run {self.tracker.run_id}: checkpoint upload failed ({first}); "
                "retrying at the next upload point", stacklevel=2,
            )
            return
        self._best_changed = False

    def remove(self) -> None:
        """Delete the local folder (the run finished; its files are in the artifact store)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- reading -----------------------------------------------------------------------
    def load_last(self) -> dict[str, Any] | None:
        """The newest readable resumable state: ``last.pt``, else ``last.prev.pt``, else the
        run's uploaded ``last.pt`` (with its ``best.pt``); None when there is none."""
        for path in (self.last_path, self.folder / PREVIOUS):
            if path.is_file():
                state = read_state(path)
                if state is not None:
                    return state
                warnings.warn(
                    f"checkpoint {path} is unreadable (cut short?); trying the previous one",
                    stacklevel=2,
                )
        return self._download_last()

    def load_best(self) -> dict[str, Any]:
        state = read_state(self.best_path)
        if state is None:
            raise CheckpointError(f"best checkpoint {self.best_path} is missing or unreadable")
        return state

    def _download_last(self) -> dict[str, Any] | None:
        if self.tracker is None:
            return None
        with tempfile.TemporaryDirectory(prefix="ablate-resume-") as tmp:
            state = self._fetch(LAST, tmp)
            if state is None:
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self.best_path.is_file() and self._fetch(BEST, tmp) is not None:
                os.replace(Path(tmp) / BEST, self.best_path)  # for the final test and "best"
        return state

    def _fetch(self, name: str, tmp: str) -> dict[str, Any] | None:
        try:
            path = self.tracker.download_artifact(f"{ARTIFACT_DIR}/{name}", tmp)
        except Exception:  # noqa: BLE001 - not uploaded (yet): nothing to resume from
            return None
        return read_state(path)


# -- figures ---------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(
    true: np.ndarray, pred: np.ndarray, class_names: Sequence[str], title: str
):
    """Row-normalised confusion matrix (scikit-learn's display), counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    n = len(class_names)
    size = min(4 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ConfusionMatrixDisplay.from_predictions(
        true,
        pred,
        labels=np.arange(n),
        display_labels=list(class_names),
        ax=ax,
        colorbar=False,
        include_values=n <= 20,
        xticks_rotation="vertical" if n > 10 else "horizontal",
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curve_figure(history: Sequence[Mapping[str, float]], title: str):
    """The run's curves per epoch: validation loss, the training objective, accuracy, and
    alpha when the run has one (a fixed or scheduled ``alpha/value``, or learned ones).

    ``loss/train`` is the training objective (label-smoothed, on MixUp/CutMix targets), not
    a loss comparable with ``loss/val``, so it gets its own panel and label; ``acc/train``
    is measured on the augmented training batches.

    Args:
        history: one metric row per epoch (0..E), as the recorder keeps them.
        title: figure title.
    """
    plt = _plt()
    learned = sorted({k for row in history for k in row if k.startswith("alpha/layer")}
                     | {k for row in history for k in row if k.startswith("alpha/seqpool")})
    labels = {cv.TRAIN_LOSS: cv.TRAIN_OBJECTIVE_LABEL, cv.TRAIN_ACC: "acc/train (augmented)"}
    panels = [
        ("validation loss", (cv.VAL_LOSS,)),
        (cv.TRAIN_OBJECTIVE_LABEL, (cv.TRAIN_LOSS,)),
        ("accuracy", (cv.TRAIN_ACC, cv.VAL_ACC)),
    ]
    if any(cv.ALPHA in row for row in history):
        panels.append(("alpha", (cv.ALPHA,)))
    if learned:
        panels.append(("learned alpha", tuple(learned)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=110)
    for ax, (label, keys) in zip(np.atleast_1d(axes), panels):
        for key in keys:
            points = [(epoch, row[key]) for epoch, row in enumerate(history) if key in row]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=labels.get(key, key))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            many = len(ax.lines) > 8  # per-head alphas: a compact two-column legend
            ax.legend(fontsize=6 if many else 8, ncol=2 if many else 1)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
