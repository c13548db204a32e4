"""softmax^T(V) at O(1) magnitude: N * softmax^T(V), N = the real tokens of each sequence.

    V' = alpha * N softmax^T(V) + (1 - alpha) * V,    out = softmax(Q K^T * scale + bias) V'

softmax^T(V) normalises every feature over the tokens, so its entries average 1/N: softmax_v
both *reshapes* V (a distribution over positions per feature) and *shrinks* it by ~1/N.
Multiplying by N keeps the reshaping and undoes the shrinking (entries average 1), which
separates the two effects in a comparison with softmax_v. Under a padding mask N counts the
real tokens of each sequence (``mask.sum(-1)``), so a padded sequence gets the same
magnitude as a full one; without a mask N is the token count.

alpha = 1 (default) is pure N softmax^T(V); alpha = 0 is standard attention exactly (the
blend is ``torch.lerp``, which returns V itself at 0). Low precision uses softmax_v's split
product.
"""

from __future__ import annotations

from torch import Tensor

from variants._registry import register_attention
from variants.softmax_v import remix_attention

__all__ = ["softmax_v_scaled"]


@register_attention("softmax_v_scaled", params={"alpha": 1.0})
def softmax_v_scaled(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None, alpha: Tensor | float = 1.0,
) -> Tensor:
    """softmax(QK^T) N*softmax^T(V), N real tokens; alpha blends with V (0 = standard)."""
    return remix_attention(
        q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale, alpha=alpha, beta=None,
        scaled=True,
    )
