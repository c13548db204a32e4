"""The training loop: one epoch at a time, with the alpha schedule applied every step.

:class:`Loop` holds what changes while a model trains (model, AdamW, the warm-up + cosine
learning-rate schedule, optional EMA, the shuffling generator, the alpha schedule) and
knows how to save and restore all of it; :func:`fit` runs its epochs and hands each
epoch's metric row to a hook. Tracking, checkpoints, test evaluation and pruning belong to
:mod:`ablate.trial.run`. The alpha schedule arrives as an object (made by
:func:`ablate.trial.run.resolve`); the loop only sizes its window to the data and calls it
before every optimizer step.
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.exceptions import ConfigError, TrainingDiverged
from ablate.models.learned_alpha import alpha_metrics, split_alpha_group
from ablate.tracking import conventions as cv
from ablate.trial.stopping import check as check_stop

if TYPE_CHECKING:
    from ablate.config import RunConfig
    from ablate.data import DataBundle, Split
    from variants import AlphaSchedule

__all__ = ["Loop", "fit", "evaluate", "seed_everything", "resolve_device", "EpochHook"]

# fit's hook: called after every epoch's validation with (epoch, metric row).
EpochHook = Callable[[int, dict], None]


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} was requested but CUDA is not available; use cpu "
                              "or auto")  # fmt: skip
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {name!r} does not exist; this machine has cuda:0..cuda:"
                              f"{torch.cuda.device_count() - 1}")  # fmt: skip
    if device.type == "mps" and not has_mps:
        raise ConfigError(f"device: {name!r} was requested but MPS is not available; use cpu or "
                          "auto")  # fmt: skip
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- optimiser and schedules ---------------------------------------------------------------
def _param_groups(
    model: nn.Module, weight_decay: float, lr: float, lr_scale: Callable[[str], float] | None
) -> list[dict]:
    """AdamW groups: no decay for biases, norms and embeddings; optional per-name lr scale."""
    groups: dict[tuple[float, float], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (
            p.ndim <= 1 or name.endswith(("positional_emb", "class_emb")) or "embeddings" in name
        )
        scale = lr_scale(name) if lr_scale else 1.0
        groups.setdefault((0.0 if no_decay else weight_decay, scale), []).append(p)
    return [
        {"params": ps, "weight_decay": wd, "lr": lr * scale, "lr_scale": scale}
        for (wd, scale), ps in groups.items()
    ]


def _lr_scheduler(opt: torch.optim.Optimizer, cfg: "RunConfig", warmup: int, total: int):
    """Linear warm-up from ~0 to the peak, then cosine down to ``min_lr`` (per step)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, SequentialLR

    peak = cfg.effective_lr
    if warmup <= 0:
        return CosineAnnealingLR(opt, T_max=max(1, total), eta_min=cfg.min_lr)
    warm = LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    rest = max(1, total - warmup)
    floor = min(cfg.min_lr / peak, 1.0) if peak > 0 else 0.0

    def cosine(step: int) -> float:  # multiplies each group's own base lr (layer decay)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, rest) / rest))

    return SequentialLR(opt, [warm, LambdaLR(opt, cosine)], milestones=[warmup])


# -- evaluation ----------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(
    model: nn.Module, split: "Split", bundle: "DataBundle", batch_size: int,
    device: torch.device, amp: bool,
) -> tuple[dict[str, float], np.ndarray]:  # fmt: skip
    """Loss, accuracy and macro precision / recall / F1 (scikit-learn) on a whole split."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    from ablate.data import iterate_batches

    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    preds = []
    for x, y in iterate_batches(split, batch_size, shuffle=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(bundle.eval_transform(x))
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        preds.append(logits.argmax(-1))
    pred = torch.cat(preds).cpu().numpy()
    true = split.y.cpu().numpy()
    p, r, f1, _ = precision_recall_fscore_support(
        true, pred, average="macro", labels=np.arange(bundle.num_classes), zero_division=0
    )
    metrics = {"loss": float(total_loss) / max(len(split), 1),
               "acc": float(accuracy_score(true, pred)),
               "precision": float(p), "recall": float(r), "f1": float(f1)}  # fmt: skip
    return metrics, pred


# -- the loop --------------------------------------------------------------------------------
@dataclass
class Loop:
    """Everything that changes while one model trains, and how to save and restore it.

    Build it with :meth:`create`; ``global_step`` counts optimizer steps taken so far.
    """

    cfg: "RunConfig"
    model: nn.Module
    bundle: "DataBundle"
    device: torch.device
    amp: bool
    opt: torch.optim.Optimizer
    sched: Any
    ema: Any
    gen: torch.Generator
    schedule: "AlphaSchedule | None"
    steps_per_epoch: int
    forward_model: nn.Module
    global_step: int = 0

    @classmethod
    def create(
        cls, cfg: "RunConfig", model: nn.Module, bundle: "DataBundle", device: torch.device,
        amp: bool, lr_scale: Callable[[str], float] | None = None,
        schedule: "AlphaSchedule | None" = None,
    ) -> "Loop":  # fmt: skip
        """The loop for ``model`` on ``bundle``.

        Args:
            lr_scale: per-parameter-name learning-rate multiplier (layer decay).
            schedule: the run's alpha schedule (``ResolvedRun.alpha_schedule``); a window
                in epochs is sized here to this data's steps per epoch. None: alpha stays.
        """
        steps_per_epoch = math.ceil(len(bundle.train) / cfg.batch_size)
        total_steps = cfg.epochs * steps_per_epoch
        groups = _param_groups(model, cfg.weight_decay, cfg.effective_lr, lr_scale)
        # a learned alpha (alpha=learned): its own group, --alpha-lr, no weight decay
        groups = split_alpha_group(groups, model, cfg.effective_lr, cfg.alpha_lr)
        opt = torch.optim.AdamW(groups, lr=cfg.effective_lr)
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
        ema = None
        if cfg.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema),
                                use_buffers=True)
        return cls(
            cfg=cfg, model=model, bundle=bundle, device=device, amp=amp, opt=opt,
            sched=_lr_scheduler(opt, cfg, warmup, total_steps), ema=ema,
            gen=torch.Generator().manual_seed(cfg.seed),
            schedule=schedule.sized(steps_per_epoch) if schedule is not None else None,
            steps_per_epoch=steps_per_epoch,
            forward_model=torch.compile(model) if cfg.compile else model,
        )  # fmt: skip

    # -- alpha ---------------------------------------------------------------------------
    def set_alpha(self, step: int) -> float | None:
        """Put the schedule's alpha for ``step`` into the model; the value, or the fixed one."""
        if self.schedule is None:
            return self._fixed_alpha
        value = self.schedule(step)
        self.model.set_variant_params(alpha=value)
        return value

    @functools.cached_property
    def _fixed_alpha(self) -> float | None:
        return self.model.variant_params().get("alpha")  # once: on CUDA a read is a sync

    def eval_model(self) -> nn.Module:
        """The weights validation and test see: the EMA at the current alpha, or the model."""
        if self.ema is None:
            return self.model
        # AveragedModel(use_buffers=True) averages alpha too; evaluate at the current value.
        current = {k: v for k, v in self.model.variant_params().items() if v is not None}
        if current:
            self.ema.module.set_variant_params(**current)
        return self.ema.module

    def validate(self) -> dict[str, float]:
        metrics, _ = evaluate(self.eval_model(), self.bundle.val, self.bundle,
                              self.cfg.batch_size * 2, self.device, self.amp)  # fmt: skip
        return {cv.curve(k, "val"): v for k, v in metrics.items()}

    # -- one epoch -----------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns its training metrics and alpha."""
        from ablate.data import iterate_batches

        cfg, model, device = self.cfg, self.model, self.device
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        alpha = None
        train = self.bundle.train
        # A last batch of 1 makes the loss noisy for no benefit: drop it.
        batches = iterate_batches(train, cfg.batch_size, shuffle=True, generator=self.gen,
                                  drop_last=len(train) % cfg.batch_size == 1)  # fmt: skip
        for x, y in batches:
            check_stop()  # a stop signal whose exception a library swallowed (stopping.py)
            alpha = self.set_alpha(self.global_step)
            inputs, target = self.bundle.train_transform(x, y)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.forward_model(inputs)
            # The objective: label smoothing, and soft targets after MixUp / CutMix.
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
            if device.type == "cpu" and not torch.isfinite(loss):
                raise TrainingDiverged(_diverged(epoch, self.global_step, loss))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            self.global_step += 1
            labels = target.argmax(-1) if target.ndim == 2 else target
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.argmax(-1) == labels).sum()
            seen += y.shape[0]
        train_loss = float(loss_sum) / seen
        if not math.isfinite(train_loss):
            raise TrainingDiverged(_diverged(epoch, self.global_step, train_loss))
        seconds = time.perf_counter() - t0
        group = self.opt.param_groups[0]
        row = {cv.TRAIN_LOSS: train_loss, cv.TRAIN_ACC: float(correct) / seen,
               cv.LR: group["lr"] / group.get("lr_scale", 1.0),
               cv.SAMPLES_PER_S: seen / seconds, cv.EPOCH_SECONDS: seconds}  # fmt: skip
        if alpha is not None:
            row[cv.ALPHA] = alpha
        return row

    # -- saving and restoring --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs besides model, optimizer and scheduler state."""
        # optimizer and scheduler are saved from ``opt`` / ``sched`` by the checkpoint format
        state: dict[str, Any] = {"global_step": self.global_step, "rng_cpu": torch.get_rng_state(),
                                 "rng_gen": self.gen.get_state()}  # fmt: skip
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if hasattr(self.bundle.train_transform, "state_dict"):  # augmentation RNG stream
            state["augment"] = self.bundle.train_transform.state_dict()
        return state

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_cpu"])
        self.gen.set_state(state["rng_gen"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        if "augment" in state and hasattr(self.bundle.train_transform, "load_state_dict"):
            self.bundle.train_transform.load_state_dict(state["augment"])
        self.global_step = int(state["global_step"])
        if self.schedule is not None:  # the model's alpha where the run stopped
            self.set_alpha(max(self.global_step - 1, 0))


def fit(loop: Loop, start_epoch: int, on_epoch: EpochHook) -> None:
    """Train epochs ``start_epoch..cfg.epochs``; after each, validate and call ``on_epoch``.

    Epoch 0 (``start_epoch == 0``) only validates: the curve starts where training starts
    (for fine-tuning, the pretrained model at the schedule's first alpha).
    """
    if start_epoch == 0:
        alpha = loop.set_alpha(0)
        row = loop.validate()
        if alpha is not None:
            row[cv.ALPHA] = alpha
        row.update(alpha_metrics(loop.model))  # learned alphas: alpha/layer{i}[/head{j}]
        on_epoch(0, row)
        start_epoch = 1
    for epoch in range(start_epoch, loop.cfg.epochs + 1):
        row = loop.train_epoch(epoch)
        on_epoch(epoch, {**loop.validate(), **row, **alpha_metrics(loop.model)})


def _diverged(epoch: int, step: int, loss: Any) -> str:
    value = float(torch.as_tensor(loss).detach())
    return (f"training diverged: loss is {value} at epoch {epoch}, step {step}; the last good "
            "checkpoint is kept (try a lower --lr or --grad-clip)")  # fmt: skip
