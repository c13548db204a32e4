"""One trial, end to end: config -> data -> model <- variant -> plain training loop -> MLflow.

``train(cfg)`` is what ``ablate run`` calls and what every Optuna trial calls. It

1. seeds everything from ``cfg.seed`` (same seed + config on CPU = identical metrics),
2. loads the data set once as tensors on the training device,
3. builds the backbone with the chosen variant at the chosen site(s),
4. trains with AdamW, linear warm-up then cosine (per step), label smoothing, gradient
   clipping, optional EMA and bf16 autocast on CUDA, setting the variant's ``alpha`` from
   its schedule before every optimizer step,
5. logs the epoch metrics (step = epoch) in one batch per epoch, checkpoints last/best,
6. evaluates the test split once, with the best-validation weights, and logs figures.

``on_epoch(epoch, metrics)`` lets a caller (the Optuna objective) watch the validation
curve; raising :class:`Pruned` from it stops the run as pruned rather than failed.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.config import RunConfig
from ablate.exceptions import AblateError, ConfigError, TrainingDiverged

__all__ = ["train", "RunResult", "Pruned", "resolve_device", "build_model", "evaluate"]


class Pruned(Exception):
    """Raised by an ``on_epoch`` callback to stop a trial early (logged as pruned)."""


@dataclass
class RunResult:
    run_id: str | None
    status: str
    best_val_acc: float
    best_epoch: int
    test: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch 0..E


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but CUDA is not available; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device: 'mps' was requested but MPS is not available; use cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- model --------------------------------------------------------------------------------
def _model_default(name: str, key: str) -> Any:
    from ablate.models._registry import model_entry

    try:
        builder = model_entry(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return getattr(builder, "defaults", {}).get(key)


def build_model(cfg: RunConfig, bundle: Any) -> nn.Module:
    """The backbone for ``cfg`` sized to the data in ``bundle``."""
    from ablate.models import create_model

    common = dict(
        num_classes=bundle.num_classes,
        variant=cfg.variant,
        apply_to=cfg.apply_to,
        positional_embedding=cfg.positional_embedding,
        norm_placement=cfg.norm_placement,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        stochastic_depth=cfg.stochastic_depth,
    )
    if bundle.task == "text":
        emb = bundle.embedding_matrix
        extra = dict(
            vocab_size=emb.shape[0],
            word_dim=emb.shape[1],
            embedding_matrix=emb,
            max_len=bundle.train.x.shape[1],
            pad_index=bundle.pad_index,
            freeze_embeddings=cfg.freeze_embeddings,
        )
    else:
        extra = dict(img_size=bundle.img_size, in_chans=bundle.in_chans)
    try:
        return create_model(cfg.model, **common, **extra)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model {cfg.model!r}: {err}") from None


def _param_groups(
    model: nn.Module, weight_decay: float, lr: float, lr_scale: Callable[[str], float] | None
) -> list[dict]:
    """AdamW groups: no decay for biases, norms and embeddings; optional per-name lr scale."""
    groups: dict[tuple[float, float], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.endswith(("positional_emb", "class_emb")) or "embeddings" in name
        scale = lr_scale(name) if lr_scale else 1.0
        groups.setdefault((0.0 if no_decay else weight_decay, scale), []).append(p)
    return [
        {"params": ps, "weight_decay": wd, "lr": lr * scale, "lr_scale": scale}
        for (wd, scale), ps in groups.items()
    ]


def _lr_scheduler(opt: torch.optim.Optimizer, cfg: RunConfig, warmup: int, total: int):
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


# -- evaluation ---------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(
    model: nn.Module, split: Any, bundle: Any, batch_size: int, device: torch.device, amp: bool
) -> tuple[dict[str, float], np.ndarray]:
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
    metrics = {
        "loss": float(total_loss) / max(len(split), 1),
        "acc": float(accuracy_score(true, pred)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f1),
    }
    return metrics, pred


# -- the loop -----------------------------------------------------------------------------
def _alpha_schedule(cfg: RunConfig, model: nn.Module, steps_per_epoch: int):
    from ablate.schedules import AlphaSchedule

    if cfg.alpha_schedule == "none":
        return None
    if "alpha" not in model.variant_param_names():
        names = model.variant_param_names()
        raise ConfigError(
            f"alpha_schedule {cfg.alpha_schedule!r} needs a variant with an 'alpha' parameter, "
            f"but {cfg.variant!r} has {', '.join(names) if names else 'no parameters'}; "
            "use softmax_v or alpha_remix, or --alpha-schedule none"
        )
    total = cfg.epochs * steps_per_epoch
    if cfg.alpha_steps is not None:
        steps = cfg.alpha_steps
    elif cfg.alpha_epochs is not None:
        steps = max(1, round(cfg.alpha_epochs * steps_per_epoch))
    else:
        steps = max(1, total - 1)  # the last optimizer step (index total-1) uses alpha_end
    return AlphaSchedule(
        cfg.alpha_schedule, cfg.alpha_start, cfg.alpha_end, steps, cfg.alpha_levels, cfg.alpha_hold
    )


def _state(model, opt, sched, ema, gen, epoch, step, best) -> dict:
    state = {
        "model": model.state_dict(),
        "arch": dict(getattr(model, "arch", {})),
        "name": getattr(model, "name", None),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "epoch": epoch,
        "global_step": step,
        "best": dict(best),
        "rng_cpu": torch.get_rng_state(),
        "rng_gen": gen.get_state(),
    }
    if ema is not None:
        state["ema"] = ema.state_dict()
    if torch.cuda.is_available():
        state["rng_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _safe_arch(arch: dict) -> dict:
    """Checkpoint-safe arch (weights_only loading allows only plain types)."""
    return {k: v for k, v in arch.items() if not isinstance(v, torch.Tensor)}


def train(
    cfg: RunConfig,
    *,
    tracker: Any | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, Any] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    resume_run_id: str | None = None,
) -> RunResult:
    """Train one configuration and log it to MLflow.

    Args:
        cfg: the resolved configuration.
        tracker: an already started :class:`ablate.tracking.Tracker` (studies create it);
            by default a new run is started in ``cfg.experiment``.
        parent_run_id: nests the new run under this one (study parent).
        extra_tags: more tags for a new run (study name, trial number).
        on_epoch: called after every epoch's validation with that epoch's metrics.
        resume_run_id: continue this run from its last checkpoint (same MLflow run).
    """
    import variants
    from ablate.data import load_data
    from ablate.tracking import RUN_TAGS, Tracker

    if cfg.variant_file:
        try:
            variants.load_variant_file(cfg.variant_file)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    try:
        variants.parse_variant(cfg.variant)
    except ValueError as err:
        raise ConfigError(str(err)) from None

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    finetuning = bool(cfg.init_from or cfg.freeze != "none" or cfg.lora_rank or cfg.layer_decay != 1.0)

    # -- data and model (errors here come before any run exists: nothing half-logged) --
    from ablate.data import preferred_img_size

    img_size = cfg.img_size or preferred_img_size(cfg.dataset) or _model_default(cfg.model, "img_size")
    in_chans = None
    if finetuning:
        from ablate.finetune import source_in_chans

        in_chans = source_in_chans(cfg)
    bundle = load_data(cfg, img_size=img_size, in_chans=in_chans)
    if cfg.task != "auto" and cfg.task != bundle.task:
        raise ConfigError(f"task {cfg.task!r} does not match data set {cfg.dataset!r} ({bundle.task})")
    seed_everything(cfg.seed)  # the same init whatever the data loading consumed
    model = build_model(cfg, bundle)
    finetune_info: dict[str, Any] = {}
    lr_scale = None
    if finetuning:
        from ablate.finetune import lr_scale_fn, prepare_model

        finetune_info = prepare_model(model, cfg)
        lr_scale = lr_scale_fn(model, cfg)
    model.to(device)
    for split in ("train", "val", "test"):
        setattr(bundle, split, getattr(bundle, split).to(device))

    steps_per_epoch = math.ceil(len(bundle.train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    schedule = _alpha_schedule(cfg, model, steps_per_epoch)
    opt = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay, cfg.effective_lr, lr_scale), lr=cfg.effective_lr
    )
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
    sched = _lr_scheduler(opt, cfg, warmup, total_steps)
    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    forward_model = torch.compile(model) if cfg.compile else model

    # -- tracking --
    start_epoch, global_step = 1, 0
    best = {"val_acc": -1.0, "epoch": 0}
    history: list[dict[str, float]] = []
    if resume_run_id:
        tracker = Tracker.attach(cfg.tracking_uri, resume_run_id)
        state = _load_resume_state(tracker, cfg)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_cpu"])
        gen.set_state(state["rng_gen"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if "augment" in state and hasattr(bundle.train_transform, "load_state_dict"):
            bundle.train_transform.load_state_dict(state["augment"])
        start_epoch, global_step, best = state["epoch"] + 1, state["global_step"], state["best"]
    elif tracker is None:
        tags = {k: getattr(cfg, k) for k in RUN_TAGS}
        tags["task"] = bundle.task  # resolved, not 'auto'
        tags.update(extra_tags or {})
        tags["torch"] = torch.__version__
        tags["device"] = str(device)
        tracker = Tracker.start(
            cfg.tracking_uri, cfg.experiment, run_name=cfg.run_name or _run_name(cfg),
            tags=tags, parent_run_id=parent_run_id,
        )
    run_id = tracker.run_id
    ckpt_dir = Path(cfg.checkpoint_dir) / run_id
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if not resume_run_id:
        import yaml

        params = cfg.to_dict()
        params.update({f"data.{k}": v for k, v in bundle.info.items()})
        params.update({f"init.{k}": v for k, v in finetune_info.items()})
        params["n_params"] = sum(p.numel() for p in model.parameters())
        params["n_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        params["steps_per_epoch"] = steps_per_epoch
        tracker.log_params(params)
        tracker.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config.yaml")

    # Without a schedule alpha never changes: read it once, not per step (on CUDA reading a
    # buffer is a device sync).
    fixed_alpha = model.variant_params().get("alpha") if schedule is None else None

    def set_alpha(step: int) -> float | None:
        if schedule is None:
            return fixed_alpha
        value = schedule(step)
        model.set_variant_params(alpha=value)
        return value

    def eval_model() -> nn.Module:
        if ema is None:
            return model
        # AveragedModel(use_buffers=True) averages alpha too; evaluate at the current value
        current = {k: v for k, v in model.variant_params().items() if v is not None}
        if current:
            ema.module.set_variant_params(**current)
        return ema.module

    status, reason = "FINISHED", None
    try:
        if start_epoch == 1:
            # Epoch 0: the curve starts where training starts (fine-tuning's alpha=0 point).
            alpha = set_alpha(0)
            val, _ = evaluate(eval_model(), bundle.val, bundle, cfg.batch_size * 2, device, amp)
            row = {f"val_{k}": v for k, v in val.items()}
            if alpha is not None:
                row["alpha"] = alpha
            tracker.log_metrics(row, step=0)
            history.append(row)
            if on_epoch:
                on_epoch(0, row)
        progress = None
        if not cfg.quiet:
            from tqdm.auto import tqdm

            progress = tqdm(total=cfg.epochs, initial=start_epoch - 1, unit="epoch", dynamic_ncols=True)
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen = 0
            alpha = None
            for x, y in _batches(bundle.train, cfg.batch_size, gen):
                alpha = set_alpha(global_step)
                inputs, target = bundle.train_transform(x, y)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = forward_model(inputs)
                loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
                if device.type == "cpu" and not torch.isfinite(loss):
                    raise TrainingDiverged(_diverged(epoch, global_step, loss))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                global_step += 1
                labels = target.argmax(-1) if target.ndim == 2 else target
                loss_sum += loss.detach().double() * y.shape[0]
                correct += (logits.argmax(-1) == labels).sum()
                seen += y.shape[0]
            train_loss = float(loss_sum) / seen
            if not math.isfinite(train_loss):
                raise TrainingDiverged(_diverged(epoch, global_step, train_loss))
            seconds = time.perf_counter() - t0
            val, _ = evaluate(eval_model(), bundle.val, bundle, cfg.batch_size * 2, device, amp)
            row = {f"val_{k}": v for k, v in val.items()}
            row.update(
                train_loss=train_loss,
                train_acc=float(correct) / seen,
                lr=opt.param_groups[0]["lr"] / opt.param_groups[0].get("lr_scale", 1.0),
                samples_per_s=seen / seconds,
                epoch_seconds=seconds,
            )
            if alpha is not None:
                row["alpha"] = alpha
            tracker.log_metrics(row, step=epoch)
            history.append(row)
            improved = val["acc"] > best["val_acc"]
            if improved:
                best = {"val_acc": val["acc"], "epoch": epoch}
            state = _state(model, opt, sched, ema, gen, epoch, global_step, best)
            state["arch"] = _safe_arch(state["arch"])
            if hasattr(bundle.train_transform, "state_dict"):  # augmentation RNG stream
                state["augment"] = bundle.train_transform.state_dict()
            state["config"] = cfg.to_dict()
            torch.save(state, ckpt_dir / "last.pt")
            tracker.log_artifact(ckpt_dir / "last.pt", "checkpoints")
            if improved:
                _save_model_only(eval_model(), ckpt_dir / "best.pt", cfg, epoch, val["acc"])
                tracker.log_artifact(ckpt_dir / "best.pt", "checkpoints")
            if progress is not None:
                progress.update(1)
                progress.set_postfix(
                    loss=f"{train_loss:.3f}", val_acc=f"{val['acc']:.3f}",
                    **({"alpha": f"{alpha:.2f}"} if alpha is not None else {}),
                )
            if on_epoch:
                on_epoch(epoch, row)
        if progress is not None:
            progress.close()

        # -- the test split, once, with the best-validation weights --
        best_state = torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)
        final_model = eval_model()
        final_model.load_state_dict(best_state["model"])
        best_params = {k: v for k, v in best_state.get("variant_params", {}).items() if v is not None}
        if best_params:
            model.set_variant_params(**best_params)
            if ema is not None:
                ema.module.set_variant_params(**best_params)
        test, pred = evaluate(final_model, bundle.test, bundle, cfg.batch_size * 2, device, amp)
        final = {f"test_{k}": v for k, v in test.items()}
        final.update(best_val_acc=best["val_acc"], best_epoch=best["epoch"])
        tracker.log_metrics(final, step=cfg.epochs)
        _log_figures(tracker, cfg, bundle, pred, tracker.run_id)
        if finetuning:
            from ablate.finetune import export_model

            export_model(final_model, ckpt_dir / "model.pt", cfg)
            tracker.log_artifact(ckpt_dir / "model.pt", "checkpoints")
        return RunResult(run_id, "FINISHED", best["val_acc"], best["epoch"], test, history)
    except Pruned:
        status, reason = "KILLED", None
        tracker.set_tags({"trial_state": "PRUNED"})
        raise
    except KeyboardInterrupt:
        status, reason = "KILLED", "interrupted (resume with: ablate run --resume " + run_id + ")"
        raise
    except TrainingDiverged as err:
        status, reason = "FAILED", str(err)
        raise
    except BaseException as err:
        status, reason = "FAILED", f"{type(err).__name__}: {err}"
        raise
    finally:
        tracker.end(status, reason)


def _batches(split, batch_size, gen):
    from ablate.data import iterate_batches

    # Drop a last batch of 1: BatchNorm-free models do not need it, but a single-sample
    # batch makes the loss noisy for no benefit.
    return iterate_batches(split, batch_size, shuffle=True, generator=gen, drop_last=len(split) % batch_size == 1)


def _diverged(epoch: int, step: int, loss: Any) -> str:
    return (
        f"training diverged: loss is {float(torch.as_tensor(loss).detach())} at epoch {epoch}, step {step}; the last good "
        "checkpoint is kept (try a lower --lr or --grad-clip)"
    )


def _save_model_only(model: nn.Module, path: Path, cfg: RunConfig, epoch: int, val_acc: float) -> None:
    torch.save(
        {
            "model": model.state_dict(),
            # the alpha (etc.) these weights were validated with: annealed runs must be
            # tested and exported at that value, not at the schedule's final one
            "variant_params": dict(getattr(model, "variant_params", dict)()),
            "arch": _safe_arch(getattr(model, "arch", {})),
            "name": getattr(model, "name", cfg.model),
            "config": cfg.to_dict(),
            "epoch": epoch,
            "val_acc": val_acc,
        },
        path,
    )


def _load_resume_state(tracker: Any, cfg: RunConfig) -> dict:
    local = Path(cfg.checkpoint_dir) / tracker.run_id / "last.pt"
    if not local.is_file():
        try:
            local = tracker.download_artifact("checkpoints/last.pt", tempfile.mkdtemp())
        except Exception:
            raise AblateError(
                f"run {tracker.run_id} has no last checkpoint to resume from "
                f"(looked in {local.parent} and the run's artifacts)"
            ) from None
    return torch.load(local, map_location="cpu", weights_only=True)


def _run_name(cfg: RunConfig) -> str:
    parts = [cfg.model, cfg.variant.replace(":", "-")]
    if cfg.apply_to != "attention":
        parts.append(cfg.apply_to)
    if cfg.alpha_schedule != "none":
        parts.append(f"a-{cfg.alpha_schedule}")
    parts.append(f"s{cfg.seed}")
    return "_".join(parts)


def _log_figures(tracker: Any, cfg: RunConfig, bundle: Any, pred: np.ndarray, run_id: str) -> None:
    from ablate.run_figures import confusion_matrix_figure, learning_curve_figure

    import matplotlib.pyplot as plt

    true = bundle.test.y.cpu().numpy()
    fig = confusion_matrix_figure(true, pred, bundle.class_names, title=f"{cfg.model} / {cfg.variant}: test")
    tracker.log_figure(fig, "figures/confusion_matrix.png")
    plt.close(fig)
    fig = learning_curve_figure(tracker, title=f"{cfg.model} / {cfg.variant} ({cfg.dataset}, seed {cfg.seed})")
    tracker.log_figure(fig, "figures/learning_curves.png")
    plt.close(fig)
