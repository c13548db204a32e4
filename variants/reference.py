"""Float64 naive oracle: explicit softmax and matmuls, no fused kernels.

Used by the tests to check every variant and by the benchmark as the "explicit attention"
baseline. Deliberately written the textbook way (q @ k^T, masked softmax, @ v) and
independent of ``_base.py`` helpers, so a bug there cannot hide in both.
"""

from __future__ import annotations

import torch

__all__ = [
    "naive_attention", "naive_token_softmax", "naive_weights", "naive_laser", "naive_laser_remix",
    "naive_value_rmsnorm", "naive_softmax_v_scaled", "ORACLES",
]


def naive_token_softmax(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """exp(v) / sum over real tokens of exp(v), per (batch, head, feature); pads get 0."""
    v = v.double()
    # Pads become -inf BEFORE the max and the exponent: a huge value at a padded position
    # must neither underflow the real tokens (max) nor overflow to inf * 0 = NaN (exp).
    if mask is not None:
        v = v.masked_fill(~mask[:, None, :, None], float("-inf"))
    e = torch.exp(v - v.amax(dim=-2, keepdim=True))  # max-shift cancels in the ratio
    return e / e.sum(dim=-2, keepdim=True)


def naive_weights(
    q: torch.Tensor, k: torch.Tensor, *, mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None, scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) in float64, padded keys at weight 0: (B, H, Nq, Nk)."""
    q, k = q.double(), k.double()
    if scale is None:
        scale = q.shape[-1] ** -0.5
    logits = (q @ k.transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
    if bias is not None:
        logits = logits + bias.double()
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    return torch.softmax(logits, dim=-1)


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None, scale: float | None = None, alpha: float = 0.0,
    beta: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) @ (alpha * softmax^T(v) + beta * v), in float64.

    alpha=0, beta=None gives standard attention; alpha=1 gives pure softmax_v. ``bias`` is
    broadcast to (B, H, Nq, Nk) and added to the scores only; ``mask`` alone decides which
    tokens take part in softmax^T(v).
    """
    weights = naive_weights(q, k, mask=mask, bias=bias, scale=scale)
    v = v.double()
    b = 1.0 - alpha if beta is None else beta
    v_new = alpha * naive_token_softmax(v, mask) + b * v if alpha != 0.0 else b * v
    return weights @ v_new


def naive_laser(q, k, v, *, mask=None, bias=None, scale=None) -> torch.Tensor:
    """log(softmax(q k^T) @ exp(v)) in float64, the formula as written (no max shift: the
    oracle gets clean O(1)-to-O(100) values, which float64's exp holds up to ~700)."""
    weights = naive_weights(q, k, mask=mask, bias=bias, scale=scale)
    v = v.double()
    if mask is not None:  # pads carry weight 0; make them harmless inside exp too
        v = v.masked_fill(~mask[:, None, :, None], 0.0)
    return torch.log(weights @ torch.exp(v))


def naive_laser_remix(q, k, v, *, mask=None, bias=None, scale=None, alpha=0.5) -> torch.Tensor:
    """(1 - alpha) * standard attention + alpha * LASER, in float64."""
    plain = naive_attention(q, k, v, mask=mask, bias=bias, scale=scale)
    return (1.0 - alpha) * plain + alpha * naive_laser(q, k, v, mask=mask, bias=bias, scale=scale)


def naive_value_rmsnorm(q, k, v, *, mask=None, bias=None, scale=None) -> torch.Tensor:
    """softmax(q k^T) @ (v / sqrt(mean over the head dim of v^2)), in float64."""
    v = v.double()
    rms = v.pow(2).mean(dim=-1, keepdim=True).sqrt()  # (B, H, N, 1)
    return naive_attention(q, k, v / rms, mask=mask, bias=bias, scale=scale)


def naive_softmax_v_scaled(
    q, k, v, *, mask=None, bias=None, scale=None, alpha=1.0
) -> torch.Tensor:
    """softmax(q k^T) @ (alpha * N * softmax^T(v) + (1 - alpha) * v), N = real tokens of
    each sequence, in float64."""
    weights = naive_weights(q, k, mask=mask, bias=bias, scale=scale)
    v = v.double()
    if mask is None:
        n = torch.full((v.shape[0],), float(v.shape[-2]), dtype=torch.float64)
    else:
        n = mask.double().sum(dim=-1)
    scaled = n[:, None, None, None] * naive_token_softmax(v, mask)
    return weights @ (alpha * scaled + (1.0 - alpha) * v)


# Built-in variant name -> its float64 oracle, called with the variant's resolved
# parameters as Python floats (None for a derived one).
ORACLES = {
    "softmax": naive_attention,  # alpha 0: standard attention
    "softmax_v": naive_attention,  # beta None: 1 - alpha
    "alpha_remix": naive_attention,
    "softmax_v_scaled": naive_softmax_v_scaled,
    "laser": naive_laser,
    "laser_remix": naive_laser_remix,
    "value_rmsnorm": naive_value_rmsnorm,
}
