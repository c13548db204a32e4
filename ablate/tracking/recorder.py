"""The recorder: everything one trial leaves behind, written from one place.

A trial calls it a handful of times (:func:`ablate.trial.run.run_trial`)::

    recorder = Recorder.open(cfg, name=..., tags=..., parent_run_id=..., resume_run_id=...)
    with recorder:                        # the run ends with the status the block earned
        first = recorder.start(loop, config, bundle)   # or recorder.resume(loop, config, bundle)
        fit(loop, first, recorder.after_epoch)          # per epoch: best, checkpoint, metrics
        recorder.finish(final, best)                    # test metrics, models, figures

What it writes: **params**, the effective configuration, each setting once with the value
that ran (:func:`ablate.trial.run.effective_config`; also ``config.yaml`` and the
checkpoints' ``config``); **tags**, MLflow's run context, the validation/test provenance
(``split``), the SDPA kernel, the parameter count and the study's tags; **metrics** per epoch
(names in :mod:`.conventions`) and at the end ``test_*`` / ``best_*`` linked to their logged
model and data set; **checkpoints** (:class:`Checkpoints`): ``last.pt`` every epoch, ``best.pt``
when validation improves, uploaded every K epochs, at the end and on a stop; **data sets and
logged models** (:mod:`.models`), **figures**, **system metrics**, one **progress line** per
epoch outside a terminal; **the end**: FINISHED; KILLED with ``trial_state=PRUNED`` (pruned)
or ``stop_reason`` (a stop signal); FAILED with ``failure_reason``; every stop also in the
``stops`` history. The exception goes on, in one line when the machine or a service failed
(:class:`~.tracker.ResumableError`; the traceback in ``traceback.log`` by the checkpoints).

Exactly once, whatever stops the run and wherever: each epoch's row is checkpointed before it
is logged, and rows checkpointed but never logged are logged on resume; a run stopped before
its first checkpoint starts again inside the same run; the end (test metrics, logged models)
is written whole or not at all, and never twice (:meth:`Recorder.finish` looks at what the
run has). A process whose run was taken over writes nothing more (the lease,
:meth:`~.tracker.Tracker.check_lease`); a store that is gone gets no more writes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ablate.exceptions import CheckpointError
from ablate.models.checkpoint import atomic_torch_save, checkpoint_payload
from ablate.models.pretrained import read_checkpoint
from ablate.tracking import conventions as cv
from ablate.tracking.conventions import ARTIFACT_DIR, BEST, LAST, PREVIOUS
from ablate.tracking.store import display_url, resolve_tracking_uri, system_metrics_monitor
from ablate.tracking.tracker import (
    LeaseLost,
    ResumableError,
    Tracker,
    TrackingUnavailable,
    log_datasets,
    log_trial_models,
    unavailable,
)

if TYPE_CHECKING:
    import torch.nn as nn

    from ablate.config import RunConfig
    from ablate.data import DataBundle
    from ablate.trial.loop import Loop

__all__ = ["Recorder", "Tested", "Best", "Checkpoints", "read_state", "confusion_matrix_figure",
           "learning_curve_figure"]  # fmt: skip


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
    since: int = 0  # the first epoch that competed (> 0: best.pt was lost, chosen again)

    def offer(self, epoch: int, val_acc: float, at_end: bool) -> bool:
        """Consider ``epoch``; True when it is the new best."""
        if at_end and not self.restricted:
            self.restricted = True  # earlier epochs are no longer candidates
            self.epoch, self.val_acc = 0, -1.0
        if (at_end or not self.restricted) and val_acc > self.val_acc:
            self.epoch, self.val_acc = epoch, val_acc
            return True
        return False


@dataclass
class Recorder:
    """Records one trial in one MLflow run (``tracker``), its checkpoint files, its
    ``history`` (one metric row per finished epoch, 0..E) and ``best`` epoch so far. Make it
    with :meth:`open`."""

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
    bundle: "DataBundle | None" = None
    _logged: set[int] = field(default_factory=set)
    _progress: Any = None
    _monitor: Any = None

    @classmethod
    def open(cls, cfg: "RunConfig", *, name: str, tags: Mapping[str, Any],
             parent_run_id: str | None = None, resume_run_id: str | None = None,
             on_epoch: Callable[[int, dict], None] | None = None) -> "Recorder":
        """Open the trial's run: a new one, or ``resume_run_id`` taken over (RUNNING)."""
        try:
            if resume_run_id:
                tracker = Tracker.attach(cfg.tracking_uri, resume_run_id)
            else:
                tracker = Tracker.start(cfg.tracking_uri, cfg.experiment, run_name=name,
                                        tags=tags, parent_run_id=parent_run_id)
        except Exception as err:
            if (why := unavailable(err)) is None:
                raise
            raise TrackingUnavailable(f"MLflow tracking store {display_url(cfg.tracking_uri)} "
                                      f"is unavailable ({why})") from None
        checkpoints = Checkpoints(Path(cfg.checkpoint_dir) / tracker.run_id, tracker,
                                  cfg.checkpoint_upload_every)
        return cls(tracker, checkpoints, cfg, name, on_epoch, standalone=parent_run_id is None)

    # -- the run's lifetime -------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        if self.cfg.system_metrics:
            self._monitor = system_metrics_monitor(self.tracker.run_id, self.tracker.tracking_uri,
                                                   self.cfg.system_metrics_interval)
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> None:
        """End the run with the status the block earned (not a taken-over run, not in a store
        that is gone); the exception goes on, as one line when the machine or a service
        failed."""
        from ablate.trial.stopping import critical

        self._close_progress()
        cause, why = err, unavailable(err)
        try:
            if why is None and not isinstance(err, LeaseLost):
                with critical(raise_pending=False):  # a stop now waits for the end's writes
                    self._end(kind, err)
        except Exception as failure:  # the store went while the run ended
            cause, why = failure, unavailable(failure)
            if why is None:
                raise
        finally:
            if self._monitor is not None and why is None and not isinstance(err, LeaseLost):
                self._monitor.finish()  # (its last flush would wait for a store that is gone)
        if why is not None:
            err = TrackingUnavailable(
                f"MLflow tracking store {display_url(self.tracker.tracking_uri)} is unavailable "
                f"({why}); run {self.tracker.run_id} is left as it was, its last checkpoint in "
                f"{self.checkpoints.folder}, to resume once the store is back"
            )
        if isinstance(err, ResumableError):  # one line with the way out; the traceback in a file
            raise type(err)(self._stop_message(err) + self._save_traceback(cause)) from None

    def _end(self, kind: Any, err: BaseException | None) -> None:
        from ablate.exceptions import AblateError, Pruned

        if err is not None and not isinstance(err, Pruned):
            self.checkpoints.upload()  # a stop / error: the newest epoch reaches MLflow
        if err is None:
            self.tracker.end(cv.FINISHED)
        elif isinstance(err, Pruned):
            self.tracker.set_trial_state("PRUNED")
            self.tracker.end(cv.KILLED)
        elif isinstance(err, (KeyboardInterrupt, ResumableError)):  # a stop signal, a full disk
            stopped = isinstance(err, KeyboardInterrupt)
            self.tracker.stop(getattr(err, "reason", "user") if stopped else "error",
                              self._stop_message(err), max(self._logged, default=-1),
                              cv.KILLED if stopped else cv.FAILED)
        else:
            user_facing = isinstance(err, AblateError)
            self.tracker.end(cv.FAILED, str(err) if user_facing else f"{kind.__name__}: {err}")

    def _stop_message(self, err: BaseException) -> str:
        message = str(err) or "interrupted"
        if self.standalone:  # a study resumes its trials itself
            uri = self.tracker.tracking_uri
            where = f" --tracking-uri {display_url(uri)}" * (uri != resolve_tracking_uri(None))
            message += f" (resume with: ablate run --resume {self.tracker.run_id}{where})"
        return message

    def _save_traceback(self, err: BaseException) -> str:
        path = self.checkpoints.folder / "traceback.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        except OSError:  # the disk that is full
            return ""
        return f"; traceback in {path}"

    # -- the start --------------------------------------------------------------------
    def start(self, loop: "Loop", config: Mapping[str, Any], bundle: "DataBundle", *,
              tags: Mapping[str, Any] = {}, at_end: Callable[[Mapping[str, float]], bool]
              | None = None, source_model: str | None = None) -> int:
        """A new run, or one stopped before its first checkpoint (what it logged is logged
        the same again): params and ``config.yaml`` (the effective configuration), data sets
        and the logged model the initial weights came from (``source_model``, its id) as
        inputs, tags and the variant file; returns the first epoch to run (0)."""
        import yaml

        self._attach(loop, config, bundle, at_end)
        self.tracker.log_params(self.config)
        self.tracker.log_text(yaml.safe_dump(self.config, sort_keys=False), "config.yaml")
        self.datasets = log_datasets(self.tracker, bundle, source_model=source_model)
        self.tracker.set_tags(tags)
        if self.cfg.variant_file:
            self.tracker.log_artifact(self.cfg.variant_file, "code")
        return 0

    def resume(self, loop: "Loop", config: Mapping[str, Any], bundle: "DataBundle", *,
               at_end: Callable[[Mapping[str, float]], bool] | None = None) -> int | None:
        """Continue the run from its newest usable checkpoint (local, else uploaded);
        returns the first epoch still to run, or None when it has none: it then starts
        again (:meth:`start`) inside the same run."""
        self._attach(loop, config, bundle, at_end)
        self.datasets = log_datasets(self.tracker, bundle, log=False)  # logged at the start
        # Epochs logged after the checkpoint resumed from (a stop before the first one, or
        # last.pt unusable and its predecessor used) are trained again but not logged again.
        self._logged = {step for step, _ in self.tracker.metric_history(cv.VAL_ACC)}
        state = self.checkpoints.load_last()
        epoch = int(state["epoch"]) if state is not None else 0
        self.tracker.resumed(epoch)
        if state is None:
            return None
        loop.restore(state)
        self.best = Best(**state["best"])
        self.history = [dict(row) for row in state["history"]]
        for done, row in enumerate(self.history):  # rows checkpointed but never logged
            if done not in self._logged:
                self.tracker.log_metrics(row, step=done)
                self._logged.add(done)
            if self.on_epoch is not None:  # the caller's view of the curve so far
                self.on_epoch(done, row)
        if self.best.epoch and self.checkpoints.load_best(missing_ok=True) is None:
            warnings.warn(f"run {self.tracker.run_id}: best.pt (epoch {self.best.epoch}) is "
                          f"lost; the best is chosen again from epoch {epoch} on", stacklevel=2)
            self.best = Best(restricted=self.best.restricted, since=epoch)
            row = self.history[epoch]  # the weights just restored compete first
            if self.best.offer(epoch, row[cv.VAL_ACC], self.at_end(row)):
                self.checkpoints.save_best(self._payload(epoch, best=True))
        return epoch + 1

    def _attach(self, loop: "Loop", config: Mapping[str, Any], bundle: "DataBundle",
                at_end: Callable[[Mapping[str, float]], bool] | None) -> None:
        self._loop, self.config, self.bundle = loop, dict(config), bundle
        if at_end is not None:
            self.at_end = at_end

    # -- each epoch ---------------------------------------------------------------------
    def after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """An epoch is validated: select the best, checkpoint, log, report progress."""
        from ablate.trial.stopping import critical

        with critical():  # a stop signal waits: never a checkpoint without its logged row
            self.tracker.check_lease()  # a process whose run was taken over writes nothing
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
            return checkpoint_payload(model, extra={"config": self.config, "epoch": epoch,
                                      "val_acc": self.best.val_acc,
                                      "variant_params": dict(model.variant_params())})
        extra = loop.state()
        extra.update(epoch=epoch, best=vars(self.best).copy(), config=self.config,
                     history=[dict(r) for r in self.history])
        return checkpoint_payload(loop.model, optimizer=loop.opt, scheduler=loop.sched,
                                  extra=extra)

    def _report(self, epoch: int, row: Mapping[str, float]) -> None:
        """A tqdm bar in a terminal; one plain line per epoch in a log file (SLURM, CI)."""
        if self.cfg.quiet:
            return
        shown = {k: f"{row[key]:.3f}" for k, key in (("loss", cv.TRAIN_LOSS),
                 ("val_acc", cv.VAL_ACC), ("alpha", cv.ALPHA)) if row.get(key) is not None}
        if sys.stderr.isatty() and sys.stdout.isatty():
            if self._progress is None:
                from tqdm.auto import tqdm

                self._progress = tqdm(total=self.cfg.epochs, initial=epoch - 1, unit="epoch",
                                      desc=self.name[:40], dynamic_ncols=True)
            self._progress.update(1)
            self._progress.set_postfix(**shown)
            return
        fields = "  ".join(f"{k} {v}" for k, v in shown.items())
        print(f"{self.name}: epoch {epoch}/{self.cfg.epochs}  {fields}  "
              f"({row.get(cv.EPOCH_SECONDS, 0.0):.1f} s/epoch)", file=sys.stderr, flush=True)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    # -- the end ------------------------------------------------------------------------
    def finish(self, final: Tested, best: Tested) -> None:
        """Test metrics, logged models, figures; then the final
        upload and, unless ``--keep-checkpoints``, the local files go.

        A resumed run that had begun its end writes only what it lacks: the models and
        their metrics are written whole under a deferred stop, and a run that has both
        ``final`` and ``best`` READY is not given them again; what a killed end left half
        written is deleted and written again, each metric once. The rest is overwritten.
        """
        from ablate.trial.stopping import critical

        self._close_progress()
        self.tracker.check_lease()
        metrics = {**{f"test_{k}": v for k, v in final.metrics.items()},
                   **{f"best_test_{k}": v for k, v in best.metrics.items()},
                   "test_epoch": final.epoch, "best_val_acc": best.val_acc,
                   "best_epoch": best.epoch, "test_alpha": final.alpha,
                   "best_test_alpha": best.alpha}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        models = self.tracker.logged_models()
        ready = {m.tags.get("ablate.weights") for m in models if m.status == "READY"}
        if not {"final", "best"} <= ready:
            if models:  # an end cut short: its models go, the metrics it logged stay
                logged = self.tracker.forget_models(models)
                metrics = {k: v for k, v in metrics.items() if k not in logged}
            with critical():
                log_trial_models(
                    self.tracker, config=self.config, datasets=self.datasets,
                    metrics=metrics, epochs=final.epoch, name=self.name,
                    final=(final.model, final.alpha, final.val_acc),
                    best=(best.model, best.epoch, best.alpha, best.val_acc),
                    example=self.bundle.eval_transform(self.bundle.test.x[:2]),  # the signature
                )
        selection = "epochs at the schedule's end value" if self.best.restricted else "all epochs"
        if self.best.since:
            selection += f" from epoch {self.best.since} on (best.pt was lost at a resume)"
        self.tracker.set_tags({"best_selection": selection})
        self._log_figures(final)
        self.checkpoints.upload()
        if not self.cfg.keep_checkpoints:
            self.checkpoints.remove()

    def _log_figures(self, final: Tested) -> None:
        import matplotlib.pyplot as plt

        bundle = self.bundle
        for path, fig in {
            "figures/confusion_matrix.png": confusion_matrix_figure(
                bundle.test.y.cpu().numpy(), final.predictions, bundle.class_names,
                title=f"{self.name}: test, final weights (epoch {final.epoch})"),
            "figures/learning_curves.png": learning_curve_figure(
                self.history, title=f"{self.name} ({bundle.name})"),
        }.items():
            self.tracker.log_figure(fig, path)
            plt.close(fig)


# -- checkpoints -------------------------------------------------------------------------
# last.pt (3x the weights) is uploaded every --checkpoint-upload-every K epochs (30), at the
# end and on a stop, synchronously: 0.2 ms per epoch for cct_2, 4.5 ms for cct_7 at K = 30
# (benchmarks/mlflow_uploads.py). Each upload carries last.prev.pt too, and each file's size
# and SHA-256 (tags ablate.digest.<file>), checked when it comes back: a damaged upload falls
# back to its predecessor instead of failing every resume.
DIGEST_TAG = "ablate.digest."
RESUMABLE = ("model", "optimizer", "scheduler", "epoch", "best", "history", "global_step",
             "rng_cpu", "rng_gen")  # fmt: skip


def read_state(path: str | Path, needs: Sequence[str] = ("model",)) -> dict[str, Any] | None:
    """A training state holding ``needs`` (a checkpoint dict), or None, with one warning
    naming what is wrong, when it is unreadable or lacks some."""
    state = read_checkpoint(path, unreadable="none")
    missing = [k for k in needs if k not in state] if isinstance(state, dict) else None
    if missing == []:
        return state
    why = f"lacks {', '.join(missing)}" if missing else "is unreadable (cut short?)"
    warnings.warn(f"checkpoint {path} {why}; trying the previous one", stacklevel=3)
    return None


def file_digest(path: str | Path) -> str:
    """``<size>:<sha256>`` of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return f"{os.path.getsize(path)}:{sha.hexdigest()}"


class Checkpoints:
    """The last / best checkpoints of one run, local and uploaded.

    Args:
        folder: ``<checkpoint_dir>/<run_id>``.
        tracker: the run whose ``checkpoints/`` artifacts receive the uploads (None: local only).
        upload_every: upload ``last.pt`` every K epochs (0: only at the end or on a stop).
    """

    def __init__(self, folder: str | Path, tracker: "Tracker | None" = None,
                 upload_every: int = 0):
        self.folder, self.tracker = Path(folder), tracker
        self.last_path, self.best_path = self.folder / LAST, self.folder / BEST
        self.upload_every = max(0, int(upload_every))
        self._best_changed = False

    # -- writing -----------------------------------------------------------------------
    def save_last(self, payload: Mapping[str, Any], epoch: int) -> None:
        """Write the resumable state of ``epoch`` (and upload it when an upload is due)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.last_path.is_file():
            os.replace(self.last_path, self.folder / PREVIOUS)
        self._save(payload, self.last_path)
        if self.upload_every and epoch % self.upload_every == 0:
            self.upload()

    def save_best(self, payload: Mapping[str, Any]) -> None:
        self._save(payload, self.best_path)
        self._best_changed = True

    def _save(self, payload: Mapping[str, Any], path: Path) -> None:
        try:
            atomic_torch_save(payload, path)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as its own error
            cause: Any = err
            while not isinstance(cause, OSError | None):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise ResumableError(
                f"cannot write checkpoint {path}: {cause.strerror or cause}; free space there "
                "(or choose another --checkpoint-dir: then the last upload is used)"
            ) from err

    def upload(self) -> None:
        """``last.pt`` and ``last.prev.pt`` (and ``best.pt`` when it changed) to the run's
        artifacts, then their sizes and digests; a failure is a warning, retried at the
        next upload point, unless the tracking store is gone (the run stops: it would be
        gone for the epoch's metrics too)."""
        if self.tracker is None:
            return
        files = [p for p in (self.last_path, self.folder / PREVIOUS) if p.is_file()]
        if self._best_changed and self.best_path.is_file():
            files.append(self.best_path)
        try:
            for path in files:
                self.tracker.log_artifact(path, ARTIFACT_DIR)
            self.tracker.set_tags({DIGEST_TAG + p.name: file_digest(p) for p in files})
        except Exception as err:  # noqa: BLE001 - an artifact store hiccup; training goes on
            if unavailable(err):
                raise
            warnings.warn(f"run {self.tracker.run_id}: checkpoint upload failed "
                          f"({' '.join(str(err).split())[:200]}); retrying at the next upload "
                          "point", stacklevel=2)
            return
        self._best_changed = False

    def remove(self) -> None:
        """Delete the local folder (the run finished; its files are in the artifact store)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- reading -----------------------------------------------------------------------
    def load_last(self) -> dict[str, Any] | None:
        """The newest usable resumable state: ``last.pt``, else ``last.prev.pt``, here, else
        the same uploaded (with its ``best.pt``); None when there is none."""
        for path in (self.last_path, self.folder / PREVIOUS):
            if path.is_file() and (state := read_state(path, RESUMABLE)) is not None:
                return state
        if self.tracker is None:
            return None
        with tempfile.TemporaryDirectory(prefix="ablate-resume-") as tmp:
            state = self._fetch(LAST, tmp) or self._fetch(PREVIOUS, tmp)
            if state is not None and not self.best_path.is_file() and self._fetch(BEST, tmp):
                self.folder.mkdir(parents=True, exist_ok=True)
                os.replace(Path(tmp) / BEST, self.best_path)  # for the final test and "best"
        return state

    def load_best(self, missing_ok: bool = False) -> dict[str, Any] | None:
        """The best-validation checkpoint (weights and the variant parameters they ran at)."""
        state = read_checkpoint(self.best_path, unreadable="none")
        if isinstance(state, dict) and "model" in state:
            return state
        if missing_ok:
            return None
        raise CheckpointError(f"best checkpoint {self.best_path} is missing or unreadable")

    def _fetch(self, name: str, tmp: str) -> dict[str, Any] | None:
        """The uploaded ``name`` in ``tmp`` when it has the size and digest recorded for it."""
        try:
            path = self.tracker.download_artifact(f"{ARTIFACT_DIR}/{name}", tmp)
        except Exception:  # noqa: BLE001 - not uploaded (yet): nothing to resume from
            return None
        recorded = self.tracker.tags().get(DIGEST_TAG + name)
        if recorded and file_digest(path) != recorded:
            warnings.warn(f"uploaded checkpoint {name} of run {self.tracker.run_id} does not have "
                          "the size and SHA-256 recorded at its upload; trying the previous one",
                          stacklevel=3)
            return None
        return read_state(path, RESUMABLE if name != BEST else ("model",))


# -- figures ---------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(true: np.ndarray, pred: np.ndarray, class_names: Sequence[str],
                            title: str):
    """Row-normalised confusion matrix (scikit-learn's display), counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    n = len(class_names)
    size = min(4 + 0.45 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ConfusionMatrixDisplay.from_predictions(
        true, pred, labels=np.arange(n), display_labels=list(class_names), ax=ax,
        colorbar=False, include_values=n <= 20,
        xticks_rotation="vertical" if n > 10 else "horizontal")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curve_figure(history: Sequence[Mapping[str, float]], title: str):
    """The run's curves per epoch (``history``: one row per epoch, 0..E): validation loss,
    the training objective (label-smoothed, on MixUp/CutMix targets: its own panel, not
    comparable with ``loss/val``), accuracy (``acc/train`` on the augmented batches), and
    alpha when the run has one (a fixed or scheduled ``alpha/value``, or learned ones)."""
    plt = _plt()
    learned = sorted({k for row in history for k in row
                      if k.startswith(("alpha/layer", "alpha/seqpool"))})
    labels = {cv.TRAIN_LOSS: cv.TRAIN_OBJECTIVE_LABEL, cv.TRAIN_ACC: "acc/train (augmented)"}
    panels = [("validation loss", (cv.VAL_LOSS,)), (cv.TRAIN_OBJECTIVE_LABEL, (cv.TRAIN_LOSS,)),
              ("accuracy", (cv.TRAIN_ACC, cv.VAL_ACC))]
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
