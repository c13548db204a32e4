"""Attention over softmax-over-tokens values: V is replaced by a blend with softmax^T(V).

softmax^T(V) normalises every feature (column) of V over the tokens, so each feature
becomes a distribution over positions. Both variants compute

    V' = alpha * softmax^T(V) + beta * V,    out = softmax(Q K^T * scale) V'

with the attention product done by ``scaled_dot_product_attention``:

- ``softmax_v``: beta = 1 - alpha, alpha defaults to 1 (pure softmax^T(V)); alpha = 0 is
  exactly standard attention, which is what annealing from a pretrained model relies on.
- ``alpha_remix``: beta is free (default 1 - alpha), so the published grids
  V + softmax^T(V) (alpha=1, beta=1), V - softmax^T(V) (alpha=-1, beta=1) and
  10 * softmax^T(V) (alpha=10, beta=0) are expressible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from variants._base import masked_token_softmax, sdpa_mask
from variants._registry import register_attention

__all__ = ["softmax_v", "alpha_remix", "remix_values"]


def remix_values(
    v: torch.Tensor,
    mask: torch.Tensor | None,
    alpha: torch.Tensor | float,
    beta: torch.Tensor | float | None,
) -> torch.Tensor:
    """V' = alpha * softmax^T(V) + beta * V on (B, H, N, D); beta None means 1 - alpha."""
    # Softmax in float32 at least: under bf16 autocast a column softmax over many tokens
    # loses most of its mass to rounding.
    work = v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
    soft = masked_token_softmax(work, mask)
    if beta is None:
        # V + alpha * (softmax^T(V) - V) in one fused kernel; alpha = 0 returns V exactly
        # and alpha = 1 returns softmax^T(V) exactly.
        out = torch.lerp(work, soft, alpha)
    else:
        out = alpha * soft + beta * work
    return out.to(v.dtype)


@register_attention("softmax_v", params={"alpha": 1.0})
def softmax_v(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    alpha: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """softmax(QK^T) softmax^T(V); with alpha: V' = alpha*softmax^T(V) + (1-alpha)*V."""
    v_new = remix_values(v, mask, alpha, None)
    return F.scaled_dot_product_attention(
        q, k, v_new, attn_mask=sdpa_mask(mask), dropout_p=dropout_p, scale=scale
    )


@register_attention("alpha_remix", params={"alpha": 0.5, "beta": None})
def alpha_remix(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    alpha: torch.Tensor | float = 0.5,
    beta: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """V' = alpha*softmax^T(V) + beta*V, beta = 1-alpha unless given."""
    v_new = remix_values(v, mask, alpha, beta)
    return F.scaled_dot_product_attention(
        q, k, v_new, attn_mask=sdpa_mask(mask), dropout_p=dropout_p, scale=scale
    )
