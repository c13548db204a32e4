"""The fine-tuning hook the trial runner calls: :func:`prepare_model` loads the initial weights
(:mod:`.sources`), freezes (:mod:`.stages`) and wires LoRA adapters (:mod:`ablate.models.lora`).
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from ablate.exceptions import CheckpointError, ConfigError
from ablate.finetune.sources import SourceWeights, load_source
from ablate.finetune.stages import check_layer_decay, freeze_parameters, is_head

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["prepare_model"]

# Architecture fields that change what the weights compute without changing any shape:
# a checkpoint trained with other values would load silently and be wrong.
_SEMANTIC_ARCH = (
    "family", "num_heads", "norm_placement", "kernel", "kernel_size", "stride", "padding",
    "conv_activation", "conv_max_pool", "seq_pool",
)


def _check_compatible(src: SourceWeights, model: nn.Module) -> None:
    """Refuse our checkpoints whose architecture differs in a way shapes do not reveal."""
    ours = dict(getattr(model, "arch", {}))
    if src.arch is None:
        if ours.get("norm_placement", "cct") != "cct":
            warnings.warn(
                f"init_from {src.spec.describe()}: official weights were trained with the "
                "official layer order, but this run uses "
                f"norm_placement={ours['norm_placement']!r}",
                stacklevel=4,  # the caller of prepare_model
            )
        return
    diffs = [
        f"{key}={src.arch[key]!r} (this run: {ours[key]!r})"
        for key in _SEMANTIC_ARCH
        if key in src.arch and key in ours and src.arch[key] != ours[key]
    ]
    if diffs:
        same_name = src.name == getattr(model, "name", None)
        hint = "matching options" if same_name else f"--model {src.name}"
        raise CheckpointError(f"init_from {src.spec.describe()}: the checkpoint's {src.name} was "
                              f"built with {', '.join(diffs)}; use {hint}")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def prepare_model(
    model: nn.Module, cfg: "RunConfig", src: SourceWeights | None = None
) -> dict[str, Any]:
    """Load the initial weights, apply ``--freeze`` and ``--lora-rank`` to ``model`` (in place).

    Args:
        model: the freshly built model (on the CPU, before the optimizer exists).
        cfg: the run configuration.
        src: the ``--init-from`` weights, already read by :func:`ablate.trial.run.resolve`
            (read here when omitted).

    Returns:
        What was done, logged as ``init.<key>`` tags: ``source_kind``, ``source_model``,
        ``loaded_tensors``, ``resized``, ``head``, ``attention``, ``source_model_id``, ...
    """
    check_layer_decay(cfg.layer_decay)
    if cfg.lora_rank and cfg.freeze == "encoder":
        raise ConfigError("freeze 'encoder' would freeze the LoRA adapters too; with --lora-rank "
                          "use --freeze none (adapters + head train, the rest is frozen anyway)")
    info: dict[str, Any] = {}
    if cfg.init_from:
        src = src if src is not None else load_source(cfg.init_from, cfg.tracking_uri)
        info.update(_load_initial_weights(model, cfg, src))
    n_frozen = len(freeze_parameters(model, cfg.freeze))
    if cfg.freeze != "none":
        info["frozen_tensors"] = n_frozen
    if cfg.lora_rank:
        info.update(_add_lora(model, cfg))
    return info


def _load_initial_weights(
    model: nn.Module, cfg: "RunConfig", src: SourceWeights
) -> dict[str, Any]:
    """Load ``src`` into ``model``; returns the ``init.*`` params that describe it."""
    from ablate.models.pretrained import load_pretrained

    _check_compatible(src, model)
    try:
        report = load_pretrained(model, src.state_dict, strict=True)
    except CheckpointError as err:
        msg = str(err).replace("checkpoint <state dict>", f"init_from {src.spec.describe()}")
        if src.name and src.name != getattr(model, "name", None):
            msg += f" (the checkpoint is a {src.name}; try --model {src.name})"
        raise CheckpointError(msg) from None
    info: dict[str, Any] = dict(
        source=cfg.init_from, source_kind=src.kind, source_file=src.spec.describe(),
        source_model=src.name or "unknown (official state dict)",
        loaded_tensors=len(report.loaded),
        resized="; ".join(
            f"{k} {_shape(old)} -> {_shape(new)}" for k, (old, new) in report.resized.items()
        ) or "none",
        head=(
            f"replaced ({report.head_classes[0]} -> {report.head_classes[1]} classes)"
            if report.head_replaced and report.head_classes
            else "loaded"
        ),
    )
    if src.spec.is_run:
        info["source_run_id"] = src.spec.run_id
    if src.model_id:
        info["source_model_id"] = src.model_id
    if src.spec.model_uri and src.spec.model_uri != src.spec.text:
        info["source_alias"] = f"{src.spec.text} = {src.spec.model_uri}"
    info["attention"] = _attention_change(src, model, cfg)
    for key, value in src.extra.items():
        info[f"source_{key}"] = value
    if src.merged_adapters:
        info["source_lora_merged"] = src.merged_adapters
    if report.notes:
        info["notes"] = "; ".join(report.notes)
    return info


def _attention_change(src: SourceWeights, model: nn.Module, cfg: "RunConfig") -> str:
    """What the run starts computing next to what the source computed, in words; a change
    is also printed, since epoch 0 then no longer validates the source's function."""
    from ablate.finetune.sources import attention_of

    def show(function: tuple[str, str]) -> str:
        return function[0] if function[1] == "attention" else f"{function[0]} @{function[1]}"

    ours = dict(model.variant_params()) if hasattr(model, "variant_params") else {}
    if cfg.alpha_schedule != "none" and "alpha" in ours:
        ours["alpha"] = cfg.alpha_start  # the schedule's value at step 0
    start, source = attention_of(getattr(model, "arch", {}), ours), attention_of(src.arch)
    if start == source:
        return f"as the source: {show(source)}"
    theirs = (src.arch or {}).get("variant_params", {}).get("alpha")
    only_alpha = theirs is not None and ours.get("alpha") is not None and attention_of(
        model.arch, {**ours, "alpha": theirs}) == source
    if only_alpha:
        note = f"starting at alpha {ours['alpha']:g} from a model trained at alpha {theirs:g}"
    else:
        note = f"starting with {show(start)} from a model trained with {show(source)}"
    note += ": epoch 0 will differ from the source"
    print(f"ablate: init_from {src.spec.describe()}: {note}", file=sys.stderr, flush=True)
    return note


def _add_lora(model: nn.Module, cfg: "RunConfig") -> dict[str, Any]:
    """Wrap projections with LoRA adapters; only adapters and the head stay trainable."""
    from ablate.models.lora import apply_lora, is_lora_parameter

    wrapped = apply_lora(model, cfg.lora_rank, cfg.lora_alpha)
    for name, p in model.named_parameters():
        if not (is_lora_parameter(name) or is_head(name, model)):
            p.requires_grad_(False)
    return {"lora_modules": len(wrapped), "lora_scale": cfg.lora_alpha / cfg.lora_rank}

