"""Model stages as freezing and layer decay see them (see :mod:`ablate.finetune`).

Embedding stage (depth 0), encoder block i (depth i + 1), head (depth L + 1). timm and
Hugging Face wrappers map their own names (``stage_of``, ``head_prefixes``, ``num_blocks``);
the compact transformers use the official names below.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

import torch.nn as nn

from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "HEAD_PREFIXES", "num_blocks", "parameter_depth", "is_head", "freeze_parameters",
    "check_layer_decay", "lr_scale_fn",
]

HEAD_PREFIXES = ("classifier.attention_pool.", "classifier.fc.")
_EMBEDDING_PREFIXES = ("tokenizer.", "embedder.")
_EMBEDDING_NAMES = ("classifier.positional_emb", "classifier.class_emb")
_BLOCK = re.compile(r"^classifier\.blocks\.(\d+)\.")


def num_blocks(model: nn.Module) -> int:
    """L, the encoder blocks: a wrapper's ``num_blocks``, else ``classifier.blocks``."""
    if isinstance(getattr(model, "num_blocks", None), int):
        return model.num_blocks
    blocks = getattr(getattr(model, "classifier", None), "blocks", None)
    if blocks is None:
        raise ConfigError(f"{getattr(model, 'name', type(model).__name__)} has no "
                          "classifier.blocks; freezing, layer decay and LoRA need a compact "
                          "transformer from `ablate models` or a timm: / hf: model")
    return len(blocks)


def parameter_depth(name: str, num_layers: int, model: nn.Module | None = None) -> int:
    """0 for the embedding stage, i + 1 for block i, ``num_layers + 1`` for the head, of the
    parameter ``name``; ``model.stage_of(name)`` decides when the model has one."""
    stage_of = getattr(model, "stage_of", None)
    if stage_of is not None:
        return int(stage_of(name))
    if name.startswith(_EMBEDDING_PREFIXES) or name in _EMBEDDING_NAMES:
        return 0
    match = _BLOCK.match(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def is_head(name: str, model: nn.Module | None = None) -> bool:
    """The pooling + classifier head (what a linear probe trains)."""
    return name.startswith(getattr(model, "head_prefixes", None) or HEAD_PREFIXES)


def freeze_parameters(model: nn.Module, what: str) -> list[str]:
    """Stop gradients (in place) of ``tokenizer`` (the embedding stage), ``encoder`` (all but
    the head) or ``none``; returns the names frozen by this call."""
    from ablate.config import FREEZE_CHOICES

    if what not in FREEZE_CHOICES:
        raise ConfigError(f"freeze: {what!r} is not valid; choose one of "
                          f"{', '.join(FREEZE_CHOICES)}")
    if what == "none":
        return []
    n, frozen = num_blocks(model), []
    for name, p in model.named_parameters():
        embedding = parameter_depth(name, n, model) == 0
        hit = embedding if what == "tokenizer" else not is_head(name, model)
        if hit and p.requires_grad:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def check_layer_decay(value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"layer_decay: must be in (0, 1] (1.0 = off, e.g. 0.75), got {value}")


def lr_scale_fn(model: nn.Module, cfg: "RunConfig") -> Callable[[str], float] | None:
    """Per-parameter learning-rate multiplier for layer-wise decay (None when off): head 1.0,
    block i of L ``layer_decay ** (L - i)``, embeddings ``layer_decay ** (L + 1)``."""
    check_layer_decay(cfg.layer_decay)
    if cfg.layer_decay == 1.0:
        return None
    n, decay = num_blocks(model), cfg.layer_decay
    return lambda name: decay ** (n + 1 - parameter_depth(name, n, model))
