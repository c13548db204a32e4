"""Value RMS-normalisation: attention over V normalised per token and head (x-transformers).

    out = softmax(Q K^T * scale + bias) V_hat,    V_hat = V / rms(V) = sqrt(Dv) V / ||V||

where the norm runs over each token's head dim (the features of one head), as
x-transformers' ``value_rmsnorm`` does (``F.normalize(v, dim=-1) * sqrt(dim_head)``). It
normalises each token, not each feature over the tokens: nothing crosses the token axis,
so padded tokens only have to get zero attention weight, which the mask gives them.

No learnable gain. x-transformers multiplies by ``gamma + 1`` per head and feature; here
that gain would be redundant: the output of every head is ``S V_hat diag(g)`` =
``(S V_hat) diag(g)``, and the next layer is linear (the attention block's output projection,
or the classifier after sequence pooling), so ``diag(g)`` folds into its weights. A gain
changes only the optimiser's path (and what weight decay sees), not what the model can
express; and a variant is a pure function of q, k, v and scalar parameters (``_base.py``),
so the comparison with the other variants stays at equal parameter counts.

Low precision: the norm is taken in float32 (a sum of Dv squares in bf16 loses ~2 digits)
and V_hat, O(1) by construction, goes back to the input dtype for SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from variants._base import LOW_PRECISION, sdpa_mask
from variants._registry import register_attention

__all__ = ["value_rmsnorm", "rms_normalise"]

_EPS = 1e-12  # F.normalize's floor on the norm (as in x-transformers)


def rms_normalise(v: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dv) -> the same shape, every token's Dv features at RMS 1 (float32 math)."""
    work = v.float() if v.dtype in LOW_PRECISION else v
    return (F.normalize(work, dim=-1, eps=_EPS) * work.shape[-1] ** 0.5).to(v.dtype)


@register_attention("value_rmsnorm")
def value_rmsnorm(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None,
) -> Tensor:
    """softmax(QK^T) V_hat, V RMS-normalised per token and head (no gain; x-transformers)."""
    return F.scaled_dot_product_attention(
        q, k, rms_normalise(v), attn_mask=sdpa_mask(mask, bias), dropout_p=dropout_p, scale=scale
    )
