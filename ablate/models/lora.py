"""LoRA adapters (Hu et al., 2021) on the attention and MLP projections of a compact transformer.

A wrapped projection computes ``y = x W^T + b + scale * (x A^T) B^T`` with ``A`` (rank, in)
and ``B`` (out, rank), ``scale = lora_alpha / rank``. ``B`` starts at zero, so the adapted
model is exactly the pretrained one at step 0 (the same promise ``softmax_v`` makes at
alpha = 0), and only ``A``, ``B`` and the classifier head are trained.

State-dict keys. :class:`LoRALinear` keeps the wrapped ``nn.Linear``'s own parameters under
their own names (``...qkv.weight``, ``...proj.bias``) and adds ``lora_A``, ``lora_B`` and the
buffer ``lora_scale`` beside them. A checkpoint of an adapted model therefore reloads into
an identically adapted model with ``strict=True`` (what resuming a LoRA run does), and
:func:`merge_lora_state_dict` turns it into a plain state dict (official key names) without
rebuilding anything. :func:`merge_lora` does the same to a live model.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.exceptions import ConfigError

__all__ = [
    "LoRALinear", "LORA_TARGETS", "apply_lora", "merge_lora", "merge_lora_state_dict",
    "is_lora_parameter", "lora_modules",
]

# Module-name suffixes that get adapters: attention qkv / output projection and the MLP.
LORA_TARGETS = ("self_attn.qkv", "self_attn.proj", "linear1", "linear2")
_LORA_KEYS = ("lora_A", "lora_B", "lora_scale")


class LoRALinear(nn.Module):
    """An ``nn.Linear`` (frozen) plus a trainable low-rank update of rank ``rank``, scaled by
    ``alpha / rank``; ``base``'s own ``weight`` / ``bias`` are taken over (same tensors, same
    names) and frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features, self.out_features, self.rank = base.in_features, base.out_features, rank
        self.weight, self.bias = base.weight, base.bias
        base.requires_grad_(False)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        # The same init as nn.Linear's weight (the LoRA paper's choice for A); B = 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # Persistent so a state dict can be merged without knowing the run's config.
        self.register_buffer("lora_scale", torch.tensor(float(alpha) / rank, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        # (..., in) -> (..., r) -> (..., out)
        update = F.linear(F.linear(x, self.lora_A), self.lora_B)
        return base + update * self.lora_scale

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W + scale * B A, (out, in)."""
        return self.weight + self.lora_scale * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (adapter merged in)."""
        w = self.weight
        # skip_init: no throwaway random init (which would also advance the global RNG).
        linear = nn.utils.skip_init(
            nn.Linear, self.in_features, self.out_features, bias=self.bias is not None,
            device=w.device, dtype=w.dtype,
        )
        linear.weight.copy_(self.merged_weight())
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, rank={self.rank}, scale={float(self.lora_scale):g}"
        )


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """Every adapted projection, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(
    model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] | None = None
) -> list[str]:
    """Wrap (in place) every ``nn.Linear`` whose name ends with one of ``targets`` in a
    :class:`LoRALinear`; returns the wrapped names. Freezing the rest is the caller's choice
    (:func:`ablate.finetune.prepare_model` leaves adapters and head trainable).

    ``targets`` None: the model's own ``lora_targets`` (timm / Hugging Face wrappers: every
    linear layer inside the blocks), else :data:`LORA_TARGETS`.
    """
    if rank < 1:
        raise ConfigError(f"lora_rank: must be >= 1 to add adapters, got {rank}")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ConfigError(f"lora_alpha: must be a positive number, got {alpha}")
    if lora_modules(model):
        raise ConfigError("the model already has LoRA adapters; apply them once")
    if targets is None:
        targets = tuple(getattr(model, "lora_targets", None) or LORA_TARGETS)
    names = [
        name
        for name, m in model.named_modules()
        if type(m) is nn.Linear and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not names:
        raise ConfigError("no projection to adapt: the model has no linear layer named "
                          f"{', '.join(targets)}")
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), rank, alpha))
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by the equivalent plain ``nn.Linear`` (in place).

    The merged model has exactly the official state-dict keys (no ``lora_*``) and computes
    the adapted function. Returns ``model``.
    """
    for name, module in list(lora_modules(model).items()):
        _set_submodule(model, name, module.to_linear())
    return model


def is_lora_parameter(name: str) -> bool:
    """True for the adapter factors ``*.lora_A`` / ``*.lora_B``."""
    return name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def merge_lora_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of an adapted model -> the plain one (``W += scale * B A``, no lora keys;
    a new dict). ValueError when an adapter lacks ``lora_A``, ``lora_B``, ``lora_scale`` or
    the base ``weight``."""
    out = dict(state_dict)
    prefixes = sorted({k.rsplit(".", 1)[0] for k in out if k.rsplit(".", 1)[-1] in _LORA_KEYS})
    for prefix in prefixes:
        needed = [f"{prefix}.{k}" for k in (*_LORA_KEYS, "weight")]
        absent = [k for k in needed if k not in out]
        if absent:
            raise ValueError(f"incomplete LoRA entries for {prefix}: missing {', '.join(absent)}")
        a, b, scale = (out.pop(f"{prefix}.{k}") for k in _LORA_KEYS)
        w = out[f"{prefix}.weight"]
        delta = scale.float() * (b.float() @ a.float())  # (out, r) @ (r, in) -> (out, in)
        out[f"{prefix}.weight"] = (w.float() + delta).to(w.dtype)
    return out
