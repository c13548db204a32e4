"""What the timm and Hugging Face adapters share: the wrapper model and its stage map.

A model from another library keeps its own modules and weights; ablate adds one
:class:`~ablate.models._blocks.VariantAttention` site inside every self-attention module (a
submodule whose parameters are non-persistent buffers, so the library's state-dict keys do
not change) and wraps the whole in :class:`ExternalModel`, which gives it the contract the
training loop relies on (:class:`~ablate.models._contract.BackboneModel`), the same as
:class:`~ablate.models._blocks.CompactTransformer`:

- ``forward(x) -> logits``; ``.name`` (the registry name, e.g. ``timm:vit_tiny_patch16_224``)
  and ``.arch`` (plain keyword arguments that rebuild the model with ``create_model``);
- ``variant_param_names()`` / ``set_variant_params(**values)`` / ``variant_params()``;
- the fine-tuning protocol of :mod:`ablate.finetune`: ``num_blocks``, ``stage_of(name)``
  (0 embeddings, i + 1 for block i, ``num_blocks + 1`` head), ``head_prefixes`` (what a
  linear probe trains) and ``lora_targets`` (the linear layers inside the blocks).

The library's model sits under ``.model``, so ``wrapper.model.state_dict()`` has exactly
the library's own keys (ours add the prefix ``model.``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from ablate.exceptions import ConfigError
from ablate.models._blocks import VariantAttention
from ablate.models._contract import VariantSitesMixin
from variants import VariantSpec

__all__ = ["ExternalModel", "require", "plain_arch", "check_apply_to", "make_site"]

SITE = "variant_site"  # attribute name of the VariantAttention inside a library module


def require(module: str, extra: str, prefix: str) -> Any:
    """Import an optional library or fail with the one line that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{prefix}:... models need the optional package {module!r}; install it with "
            f'pip install -e ".[{extra}]" (or pip install "ablate[{extra}]")'
        ) from None


def check_apply_to(apply_to: str, name: str) -> None:
    """Library models have no sequence-pooling attention: only ``attention`` is valid."""
    if apply_to != "attention":
        raise ConfigError(
            f"apply_to={apply_to!r} needs a pooling attention, but {name} pools without one "
            "(class token or mean); use apply_to='attention' (every self-attention)"
        )


def make_site(variant: VariantSpec, *, needs_bias: bool) -> VariantAttention:
    """One attention site; ``needs_bias`` refuses, now, a variant that cannot take a bias."""
    return VariantAttention(
        variant.name, variant.params, needs_bias=needs_bias, learned=variant.learned
    )


def plain_arch(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that are plain data (what a checkpoint may store and rebuild from)."""

    def plain(v: Any) -> bool:
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, Mapping):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return False

    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items() if plain(v)}


class ExternalModel(VariantSitesMixin, nn.Module):
    """A library's classifier with variant sites, under ablate's uniform model contract.

    Args:
        model: the library's model (its attention modules already hold their sites).
        name: registry name (``timm:NAME`` / ``hf:NAME_OR_DIR``).
        arch: keyword arguments that rebuild this model through ``create_model(name, **arch)``.
        blocks: module names (inside ``model``) of the transformer blocks, in depth order.
        heads: module names (inside ``model``) of the classification head.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        arch: Mapping[str, Any],
        blocks: Iterable[str],
        heads: Iterable[str],
    ):
        super().__init__()
        self.model = model
        self.name = name
        self.arch = dict(arch)
        blocks = list(blocks)
        self.num_blocks = len(blocks)
        self.block_prefixes = tuple(f"model.{b}." for b in blocks)
        self.head_prefixes = tuple(f"model.{h}." for h in heads)
        self._stages = self._stage_map()
        self.lora_targets = tuple(
            n
            for n, m in self.named_modules()
            if type(m) is nn.Linear and n.startswith(self.block_prefixes)
        )

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
        """0 for the embeddings, i + 1 for block i, ``num_blocks + 1`` for the head.

        Args:
            name: a parameter name as ``named_parameters()`` gives it (adapters added later
                inside a block belong to that block).
        """
        block = self._block_of(name)
        if block is not None:
            return block
        if name.startswith(self.head_prefixes):
            return self.num_blocks + 1
        return self._stages.get(name, self.num_blocks + 1)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, blocks={self.num_blocks}"
