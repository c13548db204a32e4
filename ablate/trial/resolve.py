"""Resolve once: turn a :class:`RunConfig`'s strings into the objects a trial runs with.

:func:`check` is cheap (no weights, no device, no data; study files are validated with it):
the :class:`~variants.VariantSpec`, the :class:`~ablate.trial.schedules.AlphaSchedule`, the
model's ``ModelEntry`` and the data set's task. :func:`resolve` adds the initial weights (a
``runs:/`` source is downloaded once, here), where validation comes from and the device.
Nothing after it re-reads a string, and every error is one line raised before any MLflow
run exists, so bad input never leaves a half-logged run behind.

Validation without leakage: when the initial weights were trained on the whole training
split of the data set being fine-tuned on (official CIFAR checkpoints; our checkpoints
record their split), validation must come from data they never saw. ``val_split="auto"``
then becomes ``test_half`` (validation and test are disjoint fixed halves of the official
test split); an explicit ``val_split="train"`` is refused, naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ablate.config import RunConfig
from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    from ablate.finetune import SourceWeights
    from ablate.models._registry import ModelEntry
    from ablate.trial.schedules import AlphaSchedule
    from variants import VariantSpec

__all__ = ["CheckedConfig", "ResolvedRun", "check", "resolve", "resolve_device"]

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
            load_variant_file_once(cfg.variant_file)
        return variants.VariantSpec.parse(cfg.variant)
    except ValueError as err:
        raise ConfigError(str(err)) from None


# variant file (resolved path) -> modification time when it was loaded
_loaded_variant_files: dict[str, int] = {}


def load_variant_file_once(path: str) -> None:
    """Import a ``--variant-file`` unless this version of it is registered already (a study
    checks many configurations naming the same file; re-importing re-registers each one).

    The file is imported in a child interpreter first: one that ends the interpreter
    (``sys.exit`` or ``os._exit`` at import) or fails would otherwise end ablate silently,
    or with its traceback; both become one line here.
    """
    import os
    import subprocess
    import sys

    import variants

    key = os.path.realpath(path)
    mtime = os.stat(key).st_mtime_ns if os.path.isfile(key) else -1
    if _loaded_variant_files.get(key) == mtime:
        return
    if mtime != -1:
        done = "ablate: variant file imported"
        code = f"import sys, variants; variants.load_variant_file(sys.argv[1]); print({done!r})"
        probe = subprocess.run(
            [sys.executable, "-c", code, path], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        if done not in probe.stdout:
            lines = probe.stderr.strip().splitlines()
            why = (
                f"fails on import: {lines[-1]}" if "Traceback" in probe.stderr and lines
                else f"ends the Python interpreter on import (exit status {probe.returncode}: "
                "sys.exit or os._exit at module level; move that code under "
                "`if __name__ == '__main__':`)"
            )
            raise ConfigError(f"variant file {path!r} {why}")
    variants.load_variant_file(path)
    _loaded_variant_files[key] = mtime


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
    from ablate.trial.schedules import AlphaSchedule, list_schedules

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
