"""One trial, end to end: the single runner behind ``ablate run``, ``ablate finetune`` and
every study worker.

    ResolvedRun -> data (preloaded tensors) -> model <- variant (+ initial weights)
      -> MLflow run (opened here, ended by ``owned_run``)
      -> fit(loop, hook) -> each epoch: checkpoint, log, select best, caller's hook
      -> test split: final weights and best-validation weights -> figures, export

``run_trial`` owns the MLflow run from open to end. A run resumes inside the same MLflow
run when ``resume_run_id`` is given (``ablate run --resume``, a retried study trial): its
last readable checkpoint restores model, optimizer, schedules and RNG streams, so the
continued curve equals an uninterrupted one on the CPU. Each epoch's row is checkpointed
before it is logged, and rows a killed run checkpointed but never logged are logged on
resume, so every epoch appears exactly once in the run's history.

Test metrics name the model that produced them: ``test_*`` are the final weights (the end
of the alpha schedule), with ``test_epoch`` and ``test_alpha``; ``best_test_*`` are the
best-validation checkpoint, with ``best_epoch``, ``best_test_alpha`` and ``best_val_acc``.
With a schedule, the best checkpoint is chosen among epochs validated at the schedule's end
value (``best_from="schedule_end"``), so a softmax_v run is never tested at alpha 0.23.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn as nn

from ablate.exceptions import AblateError, ConfigError
from ablate.tracking.checkpoints import ARTIFACT_DIR, EXPORTED, LAST, Checkpointer, read_state
from ablate.trial.loop import EpochHook, Loop, evaluate, fit, seed_everything

if TYPE_CHECKING:
    from ablate.config import RunConfig
    from ablate.data import DataBundle
    from ablate.models._contract import BuilderKwargs
    from ablate.tracking import Tracker
    from ablate.trial.resolve import ResolvedRun

__all__ = ["RunResult", "run_trial", "train", "build_model", "load_data_for", "default_run_name"]

_TEST_KEYS = ("loss", "acc", "precision", "recall", "f1")
# Settings of this machine, not of the experiment: tags ``local.<key>``, never params
# (``device`` stays a param: CPU and GPU numbers differ).
_LOCAL_KEYS = (
    "quiet", "data_dir", "download", "checkpoint_dir", "tracking_uri",
    "checkpoint_upload_every", "system_metrics", "system_metrics_interval",
)


@dataclass
class RunResult:
    """What a finished trial reports (all numbers are also in its MLflow run)."""

    run_id: str | None
    status: str
    best_val_acc: float
    best_epoch: int
    test: dict[str, float] = field(default_factory=dict)  # final weights
    best_test: dict[str, float] = field(default_factory=dict)  # best-validation weights
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch 0..E


def load_data_for(run: "ResolvedRun") -> "DataBundle":
    """The data set as tensors, sized for the model and the initial weights."""
    from ablate.data import load_data

    return load_data(
        run.cfg,
        task=run.task,
        img_size=run.img_size,
        in_chans=run.in_chans,
        preprocessing=run.preprocessing,
    )


def build_model(run: "ResolvedRun", bundle: "DataBundle") -> nn.Module:
    """The backbone for ``run`` sized to the data in ``bundle`` (weights not loaded yet)."""
    cfg = run.cfg
    kwargs: BuilderKwargs = dict(
        num_classes=bundle.num_classes,
        variant=run.variant_spec,
        apply_to=cfg.apply_to,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        stochastic_depth=cfg.stochastic_depth,
    )
    if run.model.external:  # timm:/hf: models take the library's own architecture
        kwargs.update(pretrained=cfg.pretrained, download=cfg.download)
    else:
        kwargs.update(
            positional_embedding=cfg.positional_embedding, norm_placement=cfg.norm_placement
        )
    if bundle.task == "text":
        kwargs.update(max_len=bundle.train.x.shape[1], pad_index=bundle.pad_index)
        if bundle.embedding_matrix is not None:
            emb = bundle.embedding_matrix
            kwargs.update(
                vocab_size=emb.shape[0],
                word_dim=emb.shape[1],
                embedding_matrix=emb,
                freeze_embeddings=cfg.freeze_embeddings,
            )
    else:
        kwargs.update(img_size=bundle.img_size, in_chans=bundle.in_chans)
    try:
        return run.model(**{k: v for k, v in kwargs.items() if v is not None})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model {cfg.model!r}: {err}") from None


def default_run_name(run: "ResolvedRun") -> str:
    cfg = run.cfg
    parts = [cfg.model, cfg.variant.replace(":", "-")]
    if cfg.apply_to != "attention":
        parts.append(cfg.apply_to)
    if cfg.alpha_schedule != "none":
        parts.append(f"a-{cfg.alpha_schedule}")
    parts.append(f"s{cfg.seed}")
    return "_".join(parts)


def run_trial(
    run: "ResolvedRun",
    *,
    on_epoch: EpochHook | None = None,
    parent_run_id: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    on_run_open: Any = None,
) -> RunResult:
    """Train ``run`` and log it to MLflow; the run is ended whatever happens.

    Args:
        run: the resolved configuration (:func:`ablate.trial.resolve.resolve`).
        on_epoch: called after every epoch's validation with (epoch, row); raising
            :class:`~ablate.exceptions.Pruned` ends the run as pruned.
        parent_run_id: nest a new run under this one (a study's parent run).
        extra_tags: more tags for a new run (study name, trial number, attempt).
        run_name: the new run's name (default: model, variant, schedule and seed).
        resume_run_id: continue this run from its last checkpoint instead of starting one.
        on_run_open: called with the :class:`~ablate.tracking.Tracker` once the run exists
            (a study worker records the run id on its trial).
    """
    from ablate.tracking import Tracker, owned_run

    cfg = run.cfg
    seed_everything(cfg.seed)
    bundle = load_data_for(run)
    seed_everything(cfg.seed)  # the same init whatever the data loading consumed
    model = build_model(run, bundle)
    init_info: dict[str, Any] = {}
    lr_scale = None
    if run.finetuning:
        from ablate.finetune import lr_scale_fn, prepare_model

        init_info = prepare_model(model, cfg, run.init)
        lr_scale = lr_scale_fn(model, cfg)
    model.to(run.device)
    for split in ("train", "val", "test"):
        setattr(bundle, split, getattr(bundle, split).to(run.device))
    loop = Loop.create(cfg, model, bundle, run.device, run.amp, lr_scale, run.alpha_schedule)

    # Everything above can fail on bad input before any run exists; from here on the run is
    # owned and always ended with a status.
    if resume_run_id:
        tracker = Tracker.attach(cfg.tracking_uri, resume_run_id)
    else:
        tags = {**run.tags, **{k: str(v) for k, v in (extra_tags or {}).items()}}
        tracker = Tracker.start(
            cfg.tracking_uri,
            cfg.experiment,
            run_name=run_name or cfg.run_name or default_run_name(run),
            tags=tags,
            parent_run_id=parent_run_id,
        )
    if on_run_open is not None:
        on_run_open(tracker)
    hint = f"ablate run --resume {tracker.run_id}" if parent_run_id is None else None
    from ablate.tracking.context import system_metrics
    from ablate.trial.stopping import StopSignals

    # SIGTERM / SIGINT / SIGUSR1: the run ends KILLED with its stop_reason (a study worker
    # already handles them: then this is a no-op)
    with StopSignals(), owned_run(tracker, resume_hint=hint), system_metrics(
        tracker.run_id, tracker.tracking_uri, enabled=cfg.system_metrics,
        interval=cfg.system_metrics_interval,
    ):
        trial = _Trial(run, bundle, loop, tracker, init_info, on_epoch)
        try:
            return trial.run(resume=bool(resume_run_id))
        except BaseException as err:
            trial.upload_on_stop(err)  # a stop signal / error: the newest epoch reaches MLflow
            raise


class _Trial:
    """The body of one owned run: epochs, checkpoints, test evaluation, figures."""

    def __init__(
        self,
        run: "ResolvedRun",
        bundle: "DataBundle",
        loop: Loop,
        tracker: "Tracker",
        init_info: dict[str, Any],
        on_epoch: EpochHook | None,
    ):
        self.resolved = run
        self.cfg = run.cfg
        self.bundle = bundle
        self.loop = loop
        self.tracker = tracker
        self.init_info = init_info
        self.on_epoch = on_epoch
        self.ckpt = Checkpointer(Path(self.cfg.checkpoint_dir) / tracker.run_id)
        self.history: list[dict[str, float]] = []
        self.best = {"val_acc": -1.0, "epoch": 0}
        self.any_at_end = False  # some epoch was validated at the schedule's end value
        self.logged_epochs: set[int] = set()  # epochs already in the run's history (resume)
        from ablate.tracking.checkpoint_uploads import CheckpointUploads

        self.uploads = CheckpointUploads(tracker, self.ckpt, self.cfg.checkpoint_upload_every)
        self.datasets: dict[str, Any] = {}  # split -> (name, digest) of its MLflow data set
        self.best_model: nn.Module | None = None  # set when the best weights are tested

    # -- the run ---------------------------------------------------------------------------
    def run(self, resume: bool) -> RunResult:
        from ablate.tracking.progress import epoch_progress
        from ablate.trial.stopping import deferred

        start = self._resume() if resume else self._start()
        # a bar in a terminal, one plain line per epoch in a log file
        progress = None if self.cfg.quiet else epoch_progress(self.cfg.epochs, max(start - 1, 0))
        try:
            # a stop signal abandons the current step, never an epoch's checkpoint + logging
            fit(self.loop, start, deferred(self._after_epoch), progress)
        finally:
            if progress is not None:
                progress.close()
        return self._finish()

    def _start(self) -> int:
        import yaml

        from ablate.tracking.models import log_datasets

        cfg, model = self.cfg, self.loop.model
        params = {k: v for k, v in cfg.to_dict().items() if k not in _LOCAL_KEYS}
        self.tracker.set_tags({f"local.{k}": getattr(cfg, k) for k in _LOCAL_KEYS})
        self.datasets = log_datasets(self.tracker, self.bundle)
        if cfg.variant_file:
            self.tracker.log_artifact(cfg.variant_file, "code")
        params["amp"] = self.resolved.amp  # what really ran: autocast exists only on CUDA
        params.update({f"data.{k}": v for k, v in self.bundle.info.items()})
        params.update({f"init.{k}": v for k, v in self.init_info.items()})
        params["n_params"] = sum(p.numel() for p in model.parameters())
        params["n_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        params["steps_per_epoch"] = self.loop.steps_per_epoch
        self.tracker.log_params(params)
        self.tracker.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")
        self._tag_sdpa_backend()
        return 0

    def _resume(self) -> int:
        state = self.ckpt.load_last()
        if state is None:
            state = self._download_last()
        self.loop.restore(state)
        from ablate.tracking.models import log_datasets

        self.datasets = log_datasets(self.tracker, self.bundle, log=False)
        self.best = dict(state["best"])
        self.any_at_end = bool(state.get("any_at_end", False))
        self.history = [dict(row) for row in state.get("history", [])]
        self._log_missing_rows()
        for epoch, row in enumerate(self.history):  # the caller's view of the curve so far
            if self.on_epoch is not None:
                self.on_epoch(epoch, row)
        self.tracker.set_tags({"resumed_from_epoch": state["epoch"]})
        return int(state["epoch"]) + 1

    def _download_last(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="ablate-resume-") as tmp:
            try:
                path = self.tracker.download_artifact(f"{ARTIFACT_DIR}/{LAST}", tmp)
            except Exception:
                path = None
            state = read_state(path) if path is not None else None
            if state is not None:
                self.uploads.restore_best(tmp)  # for the final test and the "best" model
        if state is None:
            raise AblateError(
                f"run {self.tracker.run_id} has no readable last checkpoint to resume from "
                f"(looked in {self.ckpt.folder} and the run's artifacts)"
            )
        return state

    def _log_missing_rows(self) -> None:
        """Rows checkpointed by a run killed before it could log them.

        Epochs logged after the checkpoint resumed from (when ``last.pt`` was unreadable
        and its predecessor was used) are trained again but not logged again: each epoch
        appears once in the history (on the CPU the repeat computes the same numbers).
        """
        self.logged_epochs = {step for step, _ in self.tracker.metric_history("val_acc")}
        for epoch, row in enumerate(self.history):
            if epoch not in self.logged_epochs:
                self.tracker.log_metrics(row, step=epoch)
                self.logged_epochs.add(epoch)

    # -- each epoch ----------------------------------------------------------------------
    def _after_epoch(self, epoch: int, row: dict[str, float]) -> None:
        self.history.append(row)
        if epoch > 0:
            self._select_best(epoch, row)
            # Checkpoint before logging: a kill in between is repaired on resume.
            self._save_last(epoch)
        if epoch not in self.logged_epochs:
            self.tracker.log_metrics(row, step=epoch)
        if epoch > 0:
            self.uploads.after_epoch(epoch)  # every K epochs, in the background
        if self.on_epoch is not None:
            self.on_epoch(epoch, row)

    def _at_schedule_end(self, row: Mapping[str, float]) -> bool:
        if self.loop.schedule is None or self.cfg.best_from == "any":
            return True
        return abs(row.get("alpha", float("nan")) - self.cfg.alpha_end) <= 1e-6 * max(
            1.0, abs(self.cfg.alpha_end)
        )

    def _select_best(self, epoch: int, row: Mapping[str, float]) -> None:
        at_end = self._at_schedule_end(row)
        if at_end and not self.any_at_end:
            # The first epoch at the end value: earlier epochs are no longer candidates.
            self.any_at_end = True
            self.best = {"val_acc": -1.0, "epoch": 0}
        if self.any_at_end and not at_end:
            return
        if row["val_acc"] > self.best["val_acc"]:
            self.best = {"val_acc": row["val_acc"], "epoch": epoch}
            self._save_best(epoch, row)

    def _save_last(self, epoch: int) -> None:
        from ablate.models.checkpoint import checkpoint_payload

        extra = self.loop.state()
        extra.update(
            epoch=epoch,
            best=dict(self.best),
            any_at_end=self.any_at_end,
            history=[dict(r) for r in self.history],
            config=self.cfg.to_dict(),
        )
        self.ckpt.save_last(
            checkpoint_payload(
                self.loop.model, optimizer=self.loop.opt, scheduler=self.loop.sched, extra=extra
            )
        )

    def _save_best(self, epoch: int, row: Mapping[str, float]) -> None:
        from ablate.models.checkpoint import checkpoint_payload

        model = self.loop.eval_model()
        extra = {
            "config": self.cfg.to_dict(),
            "epoch": epoch,
            "val_acc": row["val_acc"],
            # the alpha these weights were validated with: the best checkpoint is tested
            # and exported at that value
            "variant_params": dict(getattr(model, "variant_params", dict)()),
        }
        self.ckpt.save_best(checkpoint_payload(model, extra=extra))

    # -- the end -------------------------------------------------------------------------
    def _finish(self) -> RunResult:
        from ablate.tracking.models import log_trial_models

        cfg, loop = self.cfg, self.loop
        self.uploads.submit()  # the final last.pt / best.pt, while the test split runs
        batch = cfg.batch_size * 2
        final_model = loop.eval_model()
        final_alpha = self.history[-1].get("alpha")  # the exact value, not the f32 buffer
        test, pred = evaluate(
            final_model, self.bundle.test, self.bundle, batch, loop.device, loop.amp
        )
        metrics = {f"test_{k}": v for k, v in test.items()}
        metrics["test_epoch"] = cfg.epochs
        if final_alpha is not None:
            metrics["test_alpha"] = final_alpha
        best_test, self.best_model = dict(test), final_model
        if self.best["epoch"] != cfg.epochs:
            best_test = self._test_best(batch)
        metrics.update({f"best_test_{k}": best_test[k] for k in _TEST_KEYS})
        metrics.update(best_val_acc=self.best["val_acc"], best_epoch=self.best["epoch"])
        best_alpha = self.history[self.best["epoch"]].get("alpha")
        if best_alpha is not None:
            metrics["best_test_alpha"] = best_alpha
        self.model_ids = log_trial_models(
            self.tracker, config=cfg.to_dict(), datasets=self.datasets, metrics=metrics,
            epochs=cfg.epochs,
            final=(final_model, final_alpha, self.history[-1].get("val_acc")),
            best=(self.best_model, self.best["epoch"], best_alpha, self.best["val_acc"]),
        )
        self.tracker.set_tags(
            {
                "best_selection": "epochs at the schedule's end value"
                if self.any_at_end and self.loop.schedule is not None and cfg.best_from != "any"
                else "all epochs"
            }
        )
        self._log_figures(pred)
        if self.resolved.finetuning:
            from ablate.finetune import export_model

            path = export_model(final_model, self.ckpt.folder / EXPORTED, cfg)
            self.tracker.log_artifact(path, ARTIFACT_DIR)
        self.uploads.close()
        return RunResult(
            self.tracker.run_id,
            "FINISHED",
            self.best["val_acc"],
            self.best["epoch"],
            test,
            best_test,
            self.history,
        )

    def _test_best(self, batch: int) -> dict[str, float]:
        """Test metrics of the best-validation checkpoint, at the alpha it was validated at."""
        import copy

        state = self.ckpt.load_best()
        model = copy.deepcopy(self.loop.eval_model())  # the final weights stay for export
        model.load_state_dict(state["model"])
        saved = {k: v for k, v in state.get("variant_params", {}).items() if v is not None}
        if saved:
            model.set_variant_params(**saved)
        metrics, _ = evaluate(
            model, self.bundle.test, self.bundle, batch, self.loop.device, self.loop.amp
        )
        self.best_model = model  # logged as the run's "best" model
        return metrics

    def upload_on_stop(self, err: BaseException | None = None) -> None:
        """The hook a stop signal calls: the newest checkpoint reaches the artifact store."""
        self.uploads.on_stop(err)

    def _tag_sdpa_backend(self) -> None:
        """Which SDPA kernel the training step really runs (a variant may force math)."""
        from ablate.trial.sdpa_backend import probe_model_sdpa_backend, warn_if_math

        run, loop = self.resolved, self.loop
        sample = self.bundle.eval_transform(self.bundle.train.x[:2])
        backend = probe_model_sdpa_backend(
            loop.model, sample, dtype=torch.bfloat16 if run.amp else None, train=True
        )
        warn_if_math(backend, run.device, what=f"variant {self.cfg.variant}")
        self.tracker.set_tags({"sdpa_backend": backend})

    def _log_figures(self, pred: Any) -> None:
        import matplotlib.pyplot as plt

        from ablate.tracking.figures import confusion_matrix_figure, learning_curve_figure

        cfg = self.cfg
        true = self.bundle.test.y.cpu().numpy()
        title = f"{cfg.model} / {cfg.variant}: test, final weights (epoch {cfg.epochs})"
        fig = confusion_matrix_figure(true, pred, self.bundle.class_names, title=title)
        self.tracker.log_figure(fig, "figures/confusion_matrix.png")
        plt.close(fig)
        from ablate.models.learned_alpha import alpha_metric_keys

        fig = learning_curve_figure(
            self.tracker,
            title=f"{cfg.model} / {cfg.variant} ({cfg.dataset}, seed {cfg.seed})",
            alpha_keys=alpha_metric_keys(self.loop.model),
        )
        self.tracker.log_figure(fig, "figures/learning_curves.png")
        plt.close(fig)


def train(cfg: "RunConfig", **kwargs: Any) -> RunResult:
    """Resolve ``cfg`` and run it as one trial (``kwargs`` go to :func:`run_trial`)."""
    from ablate.trial.resolve import resolve

    return run_trial(resolve(cfg), **kwargs)
