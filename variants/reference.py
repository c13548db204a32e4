"""Float64 naive oracle: explicit softmax and matmuls, no fused kernels.

Used by the tests to check every variant and by the benchmark as the "explicit attention"
baseline. Deliberately written the textbook way (q @ k^T, masked softmax, @ v) and
independent of ``_base.py`` helpers, so a bug there cannot hide in both.
"""

from __future__ import annotations

import torch

__all__ = ["naive_attention", "naive_token_softmax"]


def naive_token_softmax(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """exp(v) / sum over real tokens of exp(v), per (batch, head, feature); pads get 0."""
    v = v.double()
    # Pads become -inf BEFORE the max and the exponent: a huge value at a padded position
    # must neither underflow the real tokens (max) nor overflow to inf * 0 = NaN (exp).
    if mask is not None:
        v = v.masked_fill(~mask[:, None, :, None], float("-inf"))
    e = torch.exp(v - v.amax(dim=-2, keepdim=True))  # max-shift cancels in the ratio
    return e / e.sum(dim=-2, keepdim=True)


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float | None = None,
    alpha: float = 0.0,
    beta: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) @ (alpha * softmax^T(v) + beta * v), in float64.

    alpha=0, beta=None gives standard attention; alpha=1 gives pure softmax_v. ``bias`` is
    broadcast to (B, H, Nq, Nk) and added to the scores only; ``mask`` alone decides which
    tokens take part in softmax^T(v).
    """
    q, k, v = q.double(), k.double(), v.double()
    if scale is None:
        scale = q.shape[-1] ** -0.5
    logits = (q @ k.transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
    if bias is not None:
        logits = logits + bias.double()
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    b = 1.0 - alpha if beta is None else beta
    v_new = alpha * naive_token_softmax(v, mask) + b * v if alpha != 0.0 else b * v
    return weights @ v_new
