"""A learnable alpha: does the network *want* softmax^T(V), per layer and per head?

``--variant softmax_v:alpha=learned`` (also ``alpha_remix``, ``laser_remix``,
``softmax_v_scaled``; options in :mod:`variants._learned`) gives every site that runs the
variant an :class:`AlphaParameter` instead of a fixed alpha buffer, with its own optimizer
group (:func:`split_alpha_group`: ``--alpha-lr`` and no weight decay, which would pull alpha
toward 0 for no reason) and metrics (:func:`alpha_metrics`), logged every epoch.

Parameterisation. Without a range alpha is the raw parameter itself, initialised to
``alpha_init``. With ``alpha_range=[lo,hi]``::

    alpha = init + (hi - lo) * (sigmoid(raw + c) - sigmoid(c)),   c = logit((init-lo)/(hi-lo))

raw starts at 0, where the bracket is ``sigmoid(c) - sigmoid(c)`` = exactly 0, so alpha is
exactly ``init`` (a plain ``lo + (hi-lo) * sigmoid(raw)`` would start at init only up to
rounding, and at alpha_init = 0 that is not standard attention). alpha is smooth in raw and
stays within [lo, hi] up to float rounding of the constant ``init - lo - (hi-lo)sigmoid(c)``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ablate.exceptions import ConfigError

if TYPE_CHECKING:
    from variants import LearnedAlpha

__all__ = [
    "AlphaParameter", "learned_sites", "alpha_metrics", "split_alpha_group", "check_no_schedule",
    "RAW_NAME",
]

RAW_NAME = "raw_alpha"  # the parameter's name inside AlphaParameter (state-dict key suffix)


class AlphaParameter(nn.Module):
    """One site's trainable alpha: () per layer or (H, 1, 1) per head (``heads``: the site's
    head count, needed for ``alpha_shape=head``; ``where`` names the site in errors)."""

    def __init__(self, spec: "LearnedAlpha", heads: int | None, where: str = "this model"):
        super().__init__()
        if spec.shape == "head" and heads is None:
            raise ConfigError("alpha_shape=head needs the head count of every attention site, "
                              f"which {where} does not give; use alpha_shape=layer")
        shape = (heads, 1, 1) if spec.shape == "head" else ()
        self.init = float(spec.init)
        self.range = spec.range
        start = 0.0 if spec.range is not None else self.init
        setattr(self, RAW_NAME, nn.Parameter(torch.full(shape, start)))
        if spec.range is not None:
            lo, hi = spec.range
            c = math.log((self.init - lo) / (hi - self.init))  # logit((init-lo)/(hi-lo))
            self.register_buffer("offset", torch.tensor(c), persistent=False)

    @property
    def raw(self) -> nn.Parameter:
        return getattr(self, RAW_NAME)

    def forward(self) -> torch.Tensor:
        """alpha: () or (H, 1, 1), broadcastable against (B, H, N, D)."""
        if self.range is None:
            return self.raw
        lo, hi = self.range
        c = self.offset
        return self.init + (hi - lo) * (torch.sigmoid(self.raw + c) - torch.sigmoid(c))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.raw.shape)}, init={self.init:g}, range={self.range}"


def _site_label(name: str, index: int) -> str:
    """``layer{i}`` from the first integer in a module path (``classifier.blocks.3...``),
    ``seqpool`` for the pooling site, ``layer{index}`` when the path has no number."""
    if name.endswith("pool_core"):
        return "seqpool"
    found = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return f"layer{found.group(1) if found else index}"


def learned_sites(model: nn.Module) -> list[tuple[str, AlphaParameter]]:
    """(label, parameter) for every learned alpha of ``model``, in module order."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, AlphaParameter)]
    return [(_site_label(n.rsplit(".", 1)[0], i), m) for i, (n, m) in enumerate(found)]


@torch.no_grad()
def alpha_metrics(model: nn.Module) -> dict[str, float]:
    """``{"alpha/layer0": 0.12, ...}`` or ``{"alpha/layer0/head0": ...}``; {} without any."""
    out: dict[str, float] = {}
    for label, param in learned_sites(model):
        values = param().detach().float().cpu().reshape(-1).tolist()
        if param.raw.dim() == 0:
            out[f"alpha/{label}"] = values[0]
        else:
            out.update({f"alpha/{label}/head{j}": v for j, v in enumerate(values)})
    return out


def split_alpha_group(
    groups: list[dict[str, Any]], model: nn.Module, lr: float, alpha_lr: float | None
) -> list[dict[str, Any]]:
    """Move every learned alpha out of ``groups`` into one group of its own, appended last:
    learning rate ``alpha_lr`` (default ``lr``), no weight decay."""
    alphas = [p.raw for _, p in learned_sites(model) if p.raw.requires_grad]
    if not alphas:
        return groups
    ids = {id(p) for p in alphas}
    kept = []
    for group in groups:
        params = [p for p in group["params"] if id(p) not in ids]
        if params:
            kept.append({**group, "params": params})
    rate = lr if alpha_lr is None else alpha_lr
    # lr_scale: the loop reports group lr / lr_scale as "lr"; keep that the run's lr.
    return kept + [
        {"params": alphas, "weight_decay": 0.0, "lr": rate, "lr_scale": rate / lr if lr else 1.0}
    ]


def check_no_schedule(learned: "LearnedAlpha | None", alpha_schedule: str, variant: str) -> None:
    """A learned alpha and an alpha schedule both want to own alpha: refuse the pair."""
    if learned is not None and alpha_schedule != "none":
        raise ConfigError(f"alpha_schedule {alpha_schedule!r} cannot drive a learned alpha "
                          f"({variant!r}); use --alpha-schedule none, or a fixed alpha (e.g. "
                          "alpha=1) with the schedule")
