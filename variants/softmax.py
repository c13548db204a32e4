"""Standard scaled dot-product attention: softmax(Q K^T * scale + bias) V."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from variants._base import sdpa_mask
from variants._registry import register_attention

__all__ = ["softmax"]


@register_attention("softmax")
def softmax(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None,
) -> Tensor:
    """Standard attention, softmax(QK^T * scale) V (the baseline)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=sdpa_mask(mask, bias), dropout_p=dropout_p, scale=scale
    )
