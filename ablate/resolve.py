"""Resolve once: turn a :class:`RunConfig`'s strings into the objects a trial runs with.

``resolve(cfg)`` is the only place that parses the variant string, looks up the model,
classifies the data set, loads the initial weights (a ``runs:/`` source is downloaded
once, here), decides where validation data comes from, picks the device and builds the
run's tags. Everything after it (:mod:`ablate.trial`, :mod:`ablate.train`) receives the
:class:`ResolvedRun` and never re-reads a string. Every error it raises is a one-line
:class:`~ablate.exceptions.ConfigError` / ``CheckpointError`` before any MLflow run exists,
so bad input never leaves a half-logged run behind.

Validation without leakage: when the initial weights were trained on the whole training
split of the data set being fine-tuned on (official CIFAR checkpoints; our checkpoints
record their split), validation must come from data they never saw. ``val_split="auto"``
then becomes ``test_half`` (validation and test are disjoint fixed halves of the official
test split); an explicit ``val_split="train"`` is refused, naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ablate.config import RunConfig
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    from ablate.finetune import SourceWeights
    from ablate.models._registry import ModelEntry

__all__ = ["ResolvedRun", "resolve", "resolve_device", "RUN_TAG_KEYS"]

# Config fields copied into tags, so runs can be filtered and grouped without params.
RUN_TAG_KEYS = ("variant", "apply_to", "model", "dataset", "alpha_schedule", "seed")
# Data sets whose official test split can provide leak-free validation, and that official
# checkpoints were trained on (whole training split).
_OFFICIAL_TRAINING_SETS = ("cifar10", "cifar100")


@dataclass(frozen=True)
class ResolvedRun:
    """A configuration with every name looked up and every choice made.

    Attributes:
        cfg: the configuration, with ``val_split`` resolved (never ``auto``).
        variant / variant_params: the registered variant and its parsed parameters.
        model: the registry entry of ``cfg.model``.
        task: ``image`` or ``text``.
        img_size: input resolution for image data (None for text).
        in_chans: image channels the initial weights expect (None: the data set's own).
        init: the initial weights, read once (None without ``--init-from``).
        finetuning: any fine-tuning option is on.
        device: where the trial trains.
        amp: bf16 autocast really on (only on CUDA).
        split_provenance: where validation and test come from, in words (a run tag).
        tags: the MLflow tags every run of this configuration carries.
    """

    cfg: RunConfig
    variant: str
    variant_params: Mapping[str, float]
    model: "ModelEntry"
    task: str
    img_size: int | None
    in_chans: int | None
    init: "SourceWeights | None"
    finetuning: bool
    device: torch.device
    amp: bool
    split_provenance: str
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def preprocessing(self) -> Mapping[str, Any] | None:
        """The model library's own input preprocessing (timm / Hugging Face models)."""
        return self.model.extras.get("preprocessing")


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
            raise ConfigError(
                f"device: {name!r} was requested but CUDA is not available; use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device: {name!r} does not exist; this machine has cuda:0..cuda:"
                f"{torch.cuda.device_count() - 1}"
            )
    if device.type == "mps" and not has_mps:
        raise ConfigError(
            f"device: {name!r} was requested but MPS is not available; use cpu or auto"
        )
    return device


def _variant(cfg: RunConfig) -> tuple[str, dict[str, float], tuple[str, ...]]:
    import variants

    try:
        if cfg.variant_file:
            variants.load_variant_file(cfg.variant_file)
        name, params = variants.parse_variant(cfg.variant)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return name, params, tuple(variants.get_attention(name).params)


def _check_schedule(cfg: RunConfig, variant: str, param_names: tuple[str, ...]) -> None:
    if cfg.alpha_schedule == "none":
        return
    from ablate.schedules import list_schedules

    valid = list_schedules()
    if cfg.alpha_schedule not in valid:
        raise ConfigError(
            f"alpha_schedule: {cfg.alpha_schedule!r} is not valid; choose one of "
            f"none, {', '.join(valid)}"
        )
    if "alpha" not in param_names:
        raise ConfigError(
            f"alpha_schedule {cfg.alpha_schedule!r} needs a variant with an 'alpha' parameter, "
            f"but {variant!r} has {', '.join(param_names) if param_names else 'no parameters'}; "
            "use softmax_v or alpha_remix, or --alpha-schedule none"
        )


def _val_split(cfg: RunConfig, init: "SourceWeights | None") -> tuple[str, str]:
    """(resolved val_split, why) with the leakage rule of the module docstring."""
    leaky, why = _source_saw_training_split(cfg, init)
    if cfg.val_split == "train" and leaky:
        raise ConfigError(
            f"val_split: 'train' would validate on images the initial weights were trained on "
            f"({why}); use --val-split test_half (or auto)"
        )
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
    from ablate.data import dataset_task, preferred_img_size
    from ablate.models._registry import model_entry

    variant, variant_params, param_names = _variant(cfg)
    _check_schedule(cfg, variant, param_names)
    try:
        entry = model_entry(cfg.model, download=cfg.download)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    task = dataset_task(cfg.dataset)
    if cfg.task != "auto" and cfg.task != task:
        raise ConfigError(f"task {cfg.task!r} does not match data set {cfg.dataset!r} ({task})")
    if entry.task != task:
        raise ConfigError(
            f"model {cfg.model!r} is a {entry.task} model but data set {cfg.dataset!r} is "
            f"{task} data; pick a {task} model (see `ablate models`)"
        )
    finetuning = bool(
        cfg.init_from or cfg.freeze != "none" or cfg.lora_rank or cfg.layer_decay != 1.0
    )
    init = None
    if cfg.init_from:
        from ablate.finetune import load_source

        init = load_source(cfg.init_from, cfg.tracking_uri)
    val_split, leak_reason = _val_split(cfg, init)
    cfg = cfg.replace(val_split=val_split) if val_split != cfg.val_split else cfg
    preprocessing = entry.extras.get("preprocessing") or {}
    img_size = None
    if task == "image":
        img_size = (
            cfg.img_size
            or preprocessing.get("img_size")
            or preferred_img_size(cfg.dataset)
            or entry.img_size
        )
    in_chans = None
    if task == "image":
        in_chans = init.in_chans if init is not None else None
        in_chans = in_chans or preprocessing.get("in_chans")
    device = resolve_device(cfg.device)
    split = "validation: held out of the training split (fixed seed)"
    if val_split == "test_half":
        split = "validation and test: disjoint stratified halves of the official test split"
        if leak_reason:
            split += f" ({leak_reason})"
    resolved = ResolvedRun(
        cfg=cfg,
        variant=variant,
        variant_params=variant_params,
        model=entry,
        task=task,
        img_size=img_size,
        in_chans=in_chans,
        init=init,
        finetuning=finetuning,
        device=device,
        amp=cfg.amp and device.type == "cuda",
        split_provenance=split,
    )
    return _with_tags(resolved)


def _with_tags(run: ResolvedRun) -> ResolvedRun:
    from dataclasses import replace

    cfg = run.cfg
    tags = {key: str(getattr(cfg, key)) for key in RUN_TAG_KEYS}
    tags.update(
        variant_name=run.variant,  # `variant` keeps the full spec, e.g. alpha_remix:beta=1
        task=run.task,
        device=str(run.device),
        torch=torch.__version__,
        val_split=cfg.val_split,
        split=run.split_provenance,
    )
    if run.variant_params:
        tags.update({f"variant.{k}": f"{v:g}" for k, v in run.variant_params.items()})
    if run.init is not None:
        tags["init_from"] = run.init.spec.describe()
    return replace(run, tags=tags)
