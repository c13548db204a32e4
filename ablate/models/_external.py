"""What the timm and Hugging Face adapters share: the wrapper model and its stage map.

A model from another library keeps its own modules and weights; ablate adds one
:class:`~ablate.models.compact.VariantAttention` site inside every self-attention module
(non-persistent buffers: the library's state-dict keys do not change) and wraps the whole in
:class:`ExternalModel`, which meets :class:`~ablate.models._contract.BackboneModel` plus the
fine-tuning protocol of :mod:`ablate.finetune`: ``num_blocks``, ``stage_of(name)`` (0
embeddings, i + 1 for block i, ``num_blocks + 1`` head), ``head_prefixes`` (what a linear
probe trains) and ``lora_targets`` (the linear layers inside the blocks). The library's
model sits under ``.model``: our state dict is the library's keys prefixed ``model.``.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from ablate.exceptions import ConfigError
from ablate.models._contract import VariantSitesMixin
from ablate.models.compact import VariantAttention

__all__ = ["ExternalModel", "require", "check_apply_to", "block_of", "mask_as_bias"]

SITE = "variant_site"  # attribute name of the VariantAttention inside a library module


def require(module: str, extra: str) -> Any:
    """Import an optional library or fail with the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{extra}:... models need the optional package {module!r}; install it with "
            f'pip install -e ".[{extra}]" (or pip install "ablate[{extra}]")'
        ) from None


def check_apply_to(apply_to: str, name: str) -> None:
    """Library models have no sequence-pooling attention: only ``attention`` is valid."""
    if apply_to != "attention":
        raise ConfigError(f"apply_to={apply_to!r} needs a pooling attention, but {name} pools "
                          "without one (class token or mean); use apply_to='attention' (every "
                          "self-attention)")


def block_of(model: nn.Module, module_name: str) -> str:
    """The transformer block holding an attention module: the nearest ancestor that is an
    element of a Sequential / ModuleList (``blocks.3``, ``encoder.layer.1``)."""
    parts = module_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = model.get_submodule(".".join(parts[: i - 1])) if i > 1 else model
        if isinstance(parent, (nn.Sequential, nn.ModuleList)):
            return ".".join(parts[:i])
    return module_name


def mask_as_bias(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A library's attention mask (bool: True = attend, or additive float) -> additive bias."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(like.dtype)
    zeros = torch.zeros(mask.shape, dtype=like.dtype, device=like.device)
    return zeros.masked_fill(~mask, float("-inf"))


class ExternalModel(VariantSitesMixin, nn.Module):
    """A library's classifier with variant sites, under ablate's uniform model contract.

    ``model``'s attention modules already hold their sites; ``blocks`` and ``heads`` name the
    transformer blocks (in depth order) and the classification head inside it.
    """

    def __init__(
        self, model: nn.Module, *, name: str, arch: Mapping[str, Any], blocks: Iterable[str],
        heads: Iterable[str],
    ):
        super().__init__()
        self.model, self.name, self.arch = model, name, dict(arch)
        blocks = list(blocks)
        self.num_blocks = len(blocks)
        self.block_prefixes = tuple(f"model.{b}." for b in blocks)
        self.head_prefixes = tuple(f"model.{h}." for h in heads)
        self._stages = self._stage_map()
        self.lora_targets = tuple(n for n, m in self.named_modules()
                                  if type(m) is nn.Linear and n.startswith(self.block_prefixes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), normalised -> logits (B, num_classes)."""
        return self.model(x)

    # -- the variant contract (VariantSitesMixin, shared with CompactTransformer) ------
    def attention_sites(self) -> list[VariantAttention]:
        return [m for m in self.modules() if isinstance(m, VariantAttention)]

    # -- stages for freezing, layer decay and LoRA --------------------------------------
    def _stage_map(self) -> dict[str, int]:
        """Depth of every parameter outside the blocks, from the library's data-flow order.

        Parameters before the first block are the embedding stage (0); between blocks
        (Swin's patch merging) they go with the next block; after the last block, the head.
        """
        depths: dict[str, int] = {}
        pending: list[str] = []
        depth = 0
        for name, _ in self.named_parameters():
            block = self._block_of(name)
            if block is None:
                pending.append(name)
                continue
            for p in pending:
                depths[p] = 0 if depth == 0 else block
            pending = []
            depth = block
        for p in pending:
            depths[p] = self.num_blocks + 1
        return depths

    def _block_of(self, name: str) -> int | None:
        for i, prefix in enumerate(self.block_prefixes):
            if name.startswith(prefix):
                return i + 1
        return None

    def stage_of(self, name: str) -> int:
        """0 for the embeddings, i + 1 for block i, ``num_blocks + 1`` for the head, of a
        parameter name (adapters added later inside a block belong to that block)."""
        block = self._block_of(name)
        if block is not None:
            return block
        if name.startswith(self.head_prefixes):
            return self.num_blocks + 1
        return self._stages.get(name, self.num_blocks + 1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, blocks={self.num_blocks}"
