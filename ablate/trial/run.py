"""One trial, end to end: the single runner behind ``ablate run``, ``ablate finetune`` and
every study worker. It reads as resolve -> build -> fit -> test::

    RunConfig -> resolve: every string looked up once -> ResolvedRun
      -> build: data (preloaded tensors) -> model <- variant (+ initial weights) -> Loop
      -> Recorder.open: the MLflow run, new or resumed     (ablate/tracking/recorder.py)
      -> fit(loop): per epoch, recorder.after_epoch         (best, checkpoint, metrics)
      -> test: final weights and best-validation weights -> recorder.finish

Resolve once. :func:`check` is cheap (no weights, no device, no data; study files are
validated with it): the :class:`~variants.VariantSpec`, the :class:`~variants.AlphaSchedule`,
the model's ``ModelEntry`` and the data set's task. :func:`resolve` adds the initial weights
(a ``runs:/`` source is downloaded once, here), where validation comes from and the device.
Nothing after it re-reads a string, and every error is one line raised before any MLflow run
exists, so bad input never leaves a half-logged run behind.

Validation without leakage: when the initial weights were trained on the whole training
split of the data set being fine-tuned on (official CIFAR checkpoints; our checkpoints
record their split), validation must come from data they never saw. ``val_split="auto"``
then becomes ``test_half`` (validation and test are disjoint fixed halves of the official
test split); an explicit ``val_split="train"`` is refused, naming the option.

A run resumes inside the same MLflow run when ``resume_run_id`` is given (``ablate run
--resume``, a retried study trial): its last readable checkpoint restores model, optimizer,
schedules and RNG streams, so the continued curve equals an uninterrupted one on the CPU.

Test metrics name the model that produced them: ``test_*`` are the final weights (the end
of the alpha schedule), with ``test_epoch`` and ``test_alpha``; ``best_test_*`` are the
best-validation checkpoint, with ``best_epoch``, ``best_test_alpha`` and ``best_val_acc``.
With a schedule, the best checkpoint is chosen among epochs validated at the schedule's end
value (``best_from="schedule_end"``), so a softmax_v run is never tested at alpha 0.23.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torch.nn as nn

from ablate.config import RunConfig
from ablate.exceptions import ConfigError
from ablate.tracking import conventions as cv
from ablate.trial.loop import Loop, evaluate, fit, resolve_device, seed_everything

if TYPE_CHECKING:
    from ablate.data import DataBundle
    from ablate.finetune import SourceWeights
    from ablate.models._contract import BuilderKwargs
    from ablate.models._registry import ModelEntry
    from ablate.tracking import Tracker
    from ablate.tracking.recorder import Recorder, Tested
    from variants import AlphaSchedule, VariantSpec

__all__ = [
    "CheckedConfig", "ResolvedRun", "check", "resolve", "RunResult", "run_trial", "train",
    "build_model", "load_data_for", "trial_name", "effective_config",
]


# -- resolve ------------------------------------------------------------------------------
# Data sets whose official test split can provide leak-free validation, and that official
# checkpoints were trained on (whole training split).
_OFFICIAL_TRAINING_SETS = ("cifar10", "cifar100")


@dataclass(frozen=True)
class CheckedConfig:
    """What :func:`check` looked up: every name of a configuration, nothing loaded. The
    schedule's window may still be in epochs (sized by the loop)."""

    variant: "VariantSpec"
    model: "ModelEntry"
    task: str
    alpha_schedule: "AlphaSchedule | None"


@dataclass(frozen=True)
class ResolvedRun:
    """A configuration with every name looked up and every choice made."""

    cfg: RunConfig  # val_split resolved (never auto)
    variant_spec: "VariantSpec"  # what every model builder receives
    model: "ModelEntry"
    task: str  # image or text
    alpha_schedule: "AlphaSchedule | None"  # None: the variant's own value
    img_size: int | None  # None for text
    in_chans: int | None  # channels the initial weights expect (None: the data set's own)
    init: "SourceWeights | None"  # read once (None without --init-from)
    finetuning: bool  # any fine-tuning option is on
    device: torch.device
    amp: bool  # bf16 autocast really on (only on CUDA)
    split_provenance: str  # where validation and test come from, in words (a run tag)

    @property
    def preprocessing(self) -> Mapping[str, Any] | None:
        """The model library's own input preprocessing (timm / Hugging Face models)."""
        return self.model.extras.get("preprocessing")


def check(cfg: RunConfig, *, combinations: bool = True, download: bool = False) -> CheckedConfig:
    """Look up every name in ``cfg`` (variant after loading ``variant_file``, alpha schedule,
    model, data set); a ConfigError names the problem and the valid choices.

    Args:
        combinations: also check that the names fit together (a schedule needs an
            ``alpha`` parameter, the model's task is the data's); False checks each name
            alone (a study's partial configurations).
        download: a model source may fetch what describes the model (a Hugging Face config).
    """
    from ablate.data import dataset_task
    from ablate.models._registry import model_entry

    variant = _variant(cfg)
    schedule = _alpha_schedule(cfg)
    if combinations and schedule is not None:
        _check_schedule_fits(cfg, variant)
    try:
        entry = model_entry(cfg.model, download=download)
    except ValueError as err:  # ConfigError included
        raise ConfigError(str(err)) from None
    task = dataset_task(cfg.dataset)
    if combinations:
        if cfg.task != "auto" and cfg.task != task:
            raise ConfigError(
                f"task {cfg.task!r} does not match data set {cfg.dataset!r} ({task})"
            )
        if entry.task != task:
            raise ConfigError(f"model {cfg.model!r} is a {entry.task} model but data set "
                              f"{cfg.dataset!r} is {task} data; pick a {task} model (see `ablate "
                              "models`)")  # fmt: skip
    return CheckedConfig(variant=variant, model=entry, task=task, alpha_schedule=schedule)


def _variant(cfg: RunConfig) -> "VariantSpec":
    import variants

    try:
        if cfg.variant_file:
            variants.load_variant_file_once(cfg.variant_file)
        return variants.VariantSpec.parse(cfg.variant)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_schedule_fits(cfg: RunConfig, variant: "VariantSpec") -> None:
    from ablate.models.learned_alpha import check_no_schedule

    check_no_schedule(variant.learned, cfg.alpha_schedule, cfg.variant)
    param_names = tuple(variant.entry.params)
    if "alpha" not in param_names:
        has = ", ".join(param_names) if param_names else "no parameters"
        raise ConfigError(f"alpha_schedule {cfg.alpha_schedule!r} needs a variant with an 'alpha' "
                          f"parameter, but {variant.name!r} has {has}; use softmax_v or "
                          "alpha_remix, or --alpha-schedule none")  # fmt: skip


def _alpha_schedule(cfg: RunConfig) -> "AlphaSchedule | None":
    """The run's schedule; its window ends with the last optimizer step of the run, of
    epoch ``alpha_epochs``, or after ``alpha_steps`` steps."""
    if cfg.alpha_schedule == "none":
        return None
    from variants import AlphaSchedule, list_schedules

    valid = list_schedules()
    if cfg.alpha_schedule not in valid:
        raise ConfigError(f"alpha_schedule: {cfg.alpha_schedule!r} is not valid; choose one of "
                          f"none, {', '.join(valid)}")  # fmt: skip
    epochs = cfg.alpha_epochs if cfg.alpha_epochs is not None else cfg.epochs
    try:
        return AlphaSchedule(cfg.alpha_schedule, cfg.alpha_start, cfg.alpha_end,
                             steps=cfg.alpha_steps, levels=cfg.alpha_levels, hold=cfg.alpha_hold,
                             epochs=None if cfg.alpha_steps is not None else epochs)  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _val_split(cfg: RunConfig, init: "SourceWeights | None") -> tuple[str, str]:
    """(resolved val_split, why) with the leakage rule of the module docstring."""
    leaky, why = _source_saw_training_split(cfg, init)
    if cfg.val_split == "train" and leaky:
        raise ConfigError("val_split: 'train' would validate on images the initial weights were "
                          f"trained on ({why}); use --val-split test_half (or auto)")  # fmt: skip
    if cfg.val_split == "auto":
        return ("test_half", why) if leaky else ("train", "")
    return cfg.val_split, ""


def _source_saw_training_split(cfg: RunConfig, init: "SourceWeights | None") -> tuple[bool, str]:
    if init is None:
        return False, ""
    source_cfg = init.config
    if init.kind == "official" or not isinstance(source_cfg, Mapping):
        if cfg.dataset in _OFFICIAL_TRAINING_SETS:
            return True, (
                "official checkpoints were trained on the whole training split"
                if init.kind == "official"
                else "the checkpoint does not record its split"
            )
        return False, ""
    if source_cfg.get("dataset") != cfg.dataset:
        return False, ""
    whole = source_cfg.get("val_split") == "test_half" or not source_cfg.get("val_fraction", 0.1)
    return whole, f"the source run trained on the whole {cfg.dataset} training split"


def resolve(cfg: RunConfig) -> ResolvedRun:
    """Look everything up once; raises one-line ConfigError / CheckpointError on bad input."""
    checked = check(cfg, download=cfg.download)
    finetuning = bool(
        cfg.init_from or cfg.freeze != "none" or cfg.lora_rank or cfg.layer_decay != 1.0
    )
    init = None
    if cfg.init_from:
        from ablate.finetune import load_source

        init = load_source(cfg.init_from, cfg.tracking_uri)
    val_split, leak_reason = _val_split(cfg, init)
    cfg = cfg.replace(val_split=val_split) if val_split != cfg.val_split else cfg
    img_size, in_chans = _image_input(cfg, checked, init)
    device = resolve_device(cfg.device)
    split = "validation: held out of the training split (fixed seed)"
    if val_split == "test_half":
        split = "validation and test: disjoint stratified halves of the official test split"
        if leak_reason:
            split += f" ({leak_reason})"
    return ResolvedRun(
        cfg=cfg, variant_spec=checked.variant, model=checked.model, task=checked.task,
        alpha_schedule=checked.alpha_schedule, img_size=img_size, in_chans=in_chans, init=init,
        finetuning=finetuning, device=device, amp=cfg.amp and device.type == "cuda",
        split_provenance=split,
    )  # fmt: skip


def _image_input(
    cfg: RunConfig, checked: CheckedConfig, init: "SourceWeights | None"
) -> tuple[int | None, int | None]:
    """(img_size, in_chans) for image data: the user's, the library's, the data set's or
    the model's size; the initial weights' or the library's channels. (None, None) for text."""
    if checked.task != "image":
        return None, None
    from ablate.data import preferred_img_size

    entry = checked.model
    preprocessing = entry.extras.get("preprocessing") or {}
    img_size = (cfg.img_size or preprocessing.get("img_size") or preferred_img_size(cfg.dataset)
                or entry.img_size)  # fmt: skip
    in_chans = init.in_chans if init is not None else None
    return img_size, in_chans or preprocessing.get("in_chans")


# -- run ----------------------------------------------------------------------------------


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


def run_trial(
    run: "ResolvedRun",
    *,
    on_epoch: Callable[[int, dict], None] | None = None,
    parent_run_id: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    on_run_open: Callable[["Tracker"], None] | None = None,
) -> RunResult:
    """Train ``run`` and record it in one MLflow run, which is ended whatever happens.

    Args:
        run: the resolved configuration (:func:`resolve`).
        on_epoch: called after every epoch's validation with (epoch, row); raising
            :class:`~ablate.exceptions.Pruned` ends the run as pruned.
        parent_run_id: nest a new run under this one (a study's parent run).
        extra_tags: more tags for a new run (study name, trial number, attempt).
        run_name: the new run's name (default: :func:`trial_name`).
        resume_run_id: continue this run from its last checkpoint (from epoch 0 when it has
            none) instead of starting one.
        on_run_open: called with the run's :class:`~ablate.tracking.Tracker` once it exists
            (a study worker records the run id on its trial).
    """
    from ablate.tracking.recorder import Recorder
    from ablate.trial.stopping import StopSignals, critical
    from ablate.trial.stopping import check as check_stop

    cfg = run.cfg
    # Everything up to the recorder can fail on bad input before any MLflow run exists.
    bundle, model, loop, init_info = _build(run)
    # SIGTERM / SIGINT / SIGUSR1/2 end the run KILLED with its stop_reason (in a study
    # worker they are handled already: then this is a no-op); one that comes while the run
    # opens waits until the caller knows the run, then ends it like any other
    with StopSignals():
        with critical(raise_pending=False):
            recorder = Recorder.open(
                cfg, name=run_name or cfg.run_name or trial_name(run),
                tags=dict(extra_tags or {}), parent_run_id=parent_run_id,
                resume_run_id=resume_run_id, on_epoch=on_epoch,
            )
            if on_run_open is not None:
                on_run_open(recorder.tracker)
        with recorder:
            check_stop()
            config = effective_config(run, bundle, model, loop)
            at_end = _at_schedule_end(run)
            first = recorder.resume(loop, config, bundle, at_end=at_end) if resume_run_id else None
            if first is None:  # a new run, or one stopped before its first checkpoint
                facts = _tags(run, bundle, loop, init_info)  # a fwd + bwd: the SDPA kernel
                first = recorder.start(loop, config, bundle, at_end=at_end, tags=facts,
                                       source_model=run.init.model_id if run.init else None)
            fit(loop, first, recorder.after_epoch)
            final, best = _test(loop, bundle, recorder)
            recorder.finish(final, best)
    return RunResult(recorder.tracker.run_id, "FINISHED", best.val_acc, best.epoch,
                     final.metrics, best.metrics, recorder.history)


def train(cfg: "RunConfig", **kwargs: Any) -> RunResult:
    """Resolve ``cfg`` and run it as one trial (``kwargs`` go to :func:`run_trial`)."""
    return run_trial(resolve(cfg), **kwargs)


# -- build -------------------------------------------------------------------------------
def _build(run: "ResolvedRun") -> tuple["DataBundle", nn.Module, Loop, dict[str, Any]]:
    """Data on the device, the model with its initial weights, the training loop."""
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
    return bundle, model, loop, init_info


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


# -- test ---------------------------------------------------------------------------------
def _test(loop: Loop, bundle: "DataBundle", recorder: "Recorder") -> tuple["Tested", "Tested"]:
    """Test the final weights and the best-validation checkpoint (at the alpha it was
    validated at)."""
    from ablate.tracking.recorder import Tested

    history, best = recorder.history, recorder.best
    batch = loop.cfg.batch_size * 2
    model = loop.eval_model()
    metrics, pred = evaluate(model, bundle.test, bundle, batch, loop.device, loop.amp)
    epochs = len(history) - 1
    final = Tested(model, metrics, epochs, history[-1].get(cv.ALPHA),
                   history[-1][cv.VAL_ACC], pred)
    if best.epoch == epochs:
        return final, Tested(model, metrics, best.epoch, final.alpha, best.val_acc)
    state = recorder.checkpoints.load_best()
    best_model = copy.deepcopy(model)
    best_model.load_state_dict(state["model"])
    saved = {k: v for k, v in state.get("variant_params", {}).items() if v is not None}
    if saved:
        best_model.set_variant_params(**saved)
    metrics, _ = evaluate(best_model, bundle.test, bundle, batch, loop.device, loop.amp)
    return final, Tested(best_model, metrics, best.epoch, history[best.epoch].get(cv.ALPHA),
                         best.val_acc)


def _at_schedule_end(run: "ResolvedRun") -> Callable[[Mapping[str, float]], bool]:
    """Which epochs may be the best checkpoint: with a schedule (and ``best_from
    schedule_end``), those validated at its end value."""
    cfg = run.cfg
    if run.alpha_schedule is None or cfg.best_from == "any":
        return lambda row: True
    tol = 1e-6 * max(1.0, abs(cfg.alpha_end))
    return lambda row: abs(row.get(cv.ALPHA, float("nan")) - cfg.alpha_end) <= tol


# -- records -------------------------------------------------------------------------------
def trial_name(run: "ResolvedRun", prefix: str | None = None) -> str:
    """A name that tells runs apart: model, variant with its parameters, where it runs, the
    alpha schedule, the initial weights and the seed, e.g.
    ``cct_2_3x2_32 softmax_v alpha 0->1 linear from best.pt s0``; a study trial's
    name starts with ``prefix`` (``quick#3``)."""
    cfg = run.cfg
    spec = run.variant_spec
    parts = [prefix, cfg.model, spec.name]
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.params.items()]
    if cfg.apply_to != "attention":
        parts.append(f"@{cfg.apply_to}")
    if run.alpha_schedule is not None:
        parts.append(f"alpha {cfg.alpha_start:g}->{cfg.alpha_end:g} {cfg.alpha_schedule}")
    if run.init is not None:
        source = run.init.spec
        where = (
            source.model_uri.removeprefix("models:/") if source.model_uri
            else f"run {source.run_id[:8]}" if source.is_run
            else source.path.name
        )
        parts.append(f"from {where}")
    parts.append(f"s{cfg.seed}")
    return " ".join(p for p in parts if p)[:250]


def _tags(run: "ResolvedRun", bundle: "DataBundle", loop: Loop,
          init_info: Mapping[str, Any]) -> dict[str, Any]:
    """Facts about the run that are not settings: where validation and test come from and
    their sizes, the SDPA kernel that really runs, the model's size, what loading the initial
    weights did."""
    from ablate.trial.sdpa_backend import probe_model_sdpa_backend, warn_if_math

    model = loop.model
    sample = bundle.eval_transform(bundle.train.x[:2])
    backend = probe_model_sdpa_backend(
        model, sample, dtype=torch.bfloat16 if run.amp else None, train=True
    )
    warn_if_math(backend, run.device, what=f"variant {run.cfg.variant}")
    tags = {
        "split": run.split_provenance,
        "sdpa_backend": backend,
        "torch": torch.__version__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        # the sizes every number is measured on (compare's binomial intervals need N)
        **{f"data.{k}": bundle.info[k] for k in ("train_size", "val_size", "test_size")},
    }
    tags.update({f"init.{k}": v for k, v in init_info.items()
                 if k not in ("source", "source_file")})
    return tags


def effective_config(
    run: "ResolvedRun", bundle: "DataBundle", model: nn.Module, loop: Loop
) -> dict[str, Any]:
    """Every setting that shaped the run, with the value that ran, and nothing that did not
    apply: the run's params, its ``config.yaml`` and its checkpoints' ``config``.

    Defaults are resolved (``lr`` is the effective peak rate, ``img_size`` the resolution,
    ``dropout`` the model's, ``augment`` the choice ``auto`` stood for), settings of another
    task or of an unused feature are left out (``max_len`` on images, ``alpha_*`` without a
    schedule, ``lora_alpha`` at rank 0), and so are this machine's settings (paths, tracking
    URI, progress). The variant is its registered name plus ``variant.<param>`` for each
    parameter it ran with. Loading the mapping back
    (:func:`ablate.config.config_from_mapping`) gives the same run.
    """
    cfg = run.cfg
    out = {**_variant_settings(run), "apply_to": cfg.apply_to, "model": cfg.model}
    out.update(_model_settings(run, getattr(model, "arch", {})))
    out.update(_data_settings(run, bundle))
    out.update(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.effective_lr, min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_epochs,
        label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip, ema=cfg.ema,
        amp=run.amp, compile=cfg.compile,
    )
    if run.alpha_schedule is not None:
        out.update(alpha_schedule=cfg.alpha_schedule, alpha_start=cfg.alpha_start,
                   alpha_end=cfg.alpha_end, alpha_hold=cfg.alpha_hold, best_from=cfg.best_from)
        if cfg.alpha_steps is not None:
            out["alpha_steps"] = cfg.alpha_steps
        else:
            out["alpha_epochs"] = cfg.alpha_epochs if cfg.alpha_epochs is not None else cfg.epochs
        if cfg.alpha_schedule == "step":
            out["alpha_levels"] = cfg.alpha_levels
    if run.variant_spec.learned is not None:
        out["alpha_lr"] = cfg.alpha_lr if cfg.alpha_lr is not None else cfg.effective_lr
    if run.init is not None:
        out["init_from"] = run.init.spec.describe()
    if run.finetuning:
        out.update(freeze=cfg.freeze, layer_decay=cfg.layer_decay, lora_rank=cfg.lora_rank)
        if cfg.lora_rank:
            out["lora_alpha"] = cfg.lora_alpha
    out.update(seed=cfg.seed, device=str(run.device))
    return out


def _variant_settings(run: "ResolvedRun") -> dict[str, Any]:
    spec = run.variant_spec
    out: dict[str, Any] = {"variant": spec.name}
    for key, value in spec.resolved_params().items():
        if value is not None and not (run.alpha_schedule is not None and key == "alpha"):
            out[f"variant.{key}"] = value
    if spec.learned is not None:  # alpha=learned and its options, as the variant text has them
        learned = spec.learned
        out.update({"variant.alpha": "learned", "variant.alpha_shape": learned.shape,
                    "variant.alpha_init": learned.init})
        if learned.range is not None:
            out["variant.alpha_range"] = f"[{learned.range[0]:g},{learned.range[1]:g}]"
    if run.cfg.variant_file:
        out["variant_file"] = run.cfg.variant_file
    return out


def _model_settings(run: "ResolvedRun", arch: Mapping[str, Any]) -> dict[str, Any]:
    cfg = run.cfg
    if run.model.external:
        out: dict[str, Any] = {"pretrained": cfg.pretrained}
    else:
        out = {"positional_embedding": arch.get("positional_embedding"),
               "norm_placement": arch.get("norm_placement", cfg.norm_placement)}
    for key in ("dropout", "attention_dropout", "stochastic_depth"):
        value = arch.get(key, getattr(cfg, key))
        if value is not None:
            out[key] = value
    return out


def _data_settings(run: "ResolvedRun", bundle: "DataBundle") -> dict[str, Any]:
    cfg = run.cfg
    out: dict[str, Any] = {"task": run.task, "dataset": cfg.dataset, "val_split": cfg.val_split}
    if cfg.val_split == "train":
        out["val_fraction"] = cfg.val_fraction
    if bundle.info.get("test_held_out"):
        out["test_fraction"] = cfg.test_fraction
    if run.task == "image":
        out["img_size"] = bundle.img_size
        plan = getattr(bundle.train_transform, "plan", None)
        if plan is not None:  # "auto" becomes the choice that does the same
            augment = plan.policy or ("crop_flip" if plan.flip else "crop" if plan.crop_padding
                                      else "none")
            out.update(augment=augment, mixup=plan.mixup_alpha, cutmix=plan.cutmix_alpha)
        return out
    if cfg.dataset.startswith(("csv:", "tsv:", "jsonl:")):
        out.update(text_col=cfg.text_col, label_col=cfg.label_col)
    out.update(max_len=cfg.max_len, freeze_embeddings=cfg.freeze_embeddings)
    if cfg.embeddings:
        out["embeddings"] = cfg.embeddings
    return out
