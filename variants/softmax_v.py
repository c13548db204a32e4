"""Attention over softmax-over-tokens values: V is replaced by a blend with softmax^T(V).

softmax^T(V) normalises every feature (column) of V over the tokens, so each feature
becomes a distribution over positions. Both variants compute

    V' = alpha * softmax^T(V) + beta * V,    out = softmax(Q K^T * scale + bias) V'

with the attention product done by ``scaled_dot_product_attention``:

- ``softmax_v``: beta = 1 - alpha, alpha defaults to 1 (pure softmax^T(V)); alpha = 0 is
  exactly standard attention, which is what annealing from a pretrained model relies on.
- ``alpha_remix``: beta is free (default 1 - alpha), so the published grids
  V + softmax^T(V) (alpha=1, beta=1), V - softmax^T(V) (alpha=-1, beta=1) and
  10 * softmax^T(V) (alpha=10, beta=0) are expressible.

softmax^T(V) runs over the tokens that ``mask`` keeps; ``bias`` only shifts the scores.

Low precision (bf16/fp16 tensors, or any autocast region, where SDPA itself runs in bf16):
softmax^T(V) entries are about 1/N, so alpha * softmax^T(V) sits far below bf16's resolution
next to V and a blended V' would lose it (measured: 380% error in that term at N=64,
alpha=0.01). There the product is split by linearity instead,

    out = beta * (S V) + (alpha / N) * (S (N softmax^T(V))),    S = softmax(Q K^T * scale + bias)

with ``[V, N softmax^T(V)]`` (both O(1)) attended in ONE SDPA call, so that both halves see the
same dropout mask, and the two halves combined in float32. Under autocast the float32 sum is
returned (as autocast's softmax does); a plain bf16/fp16 model gets it cast back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from variants._base import LOW_PRECISION, masked_token_softmax, sdpa_mask
from variants._registry import register_attention

__all__ = ["softmax_v", "alpha_remix", "remix_values", "remix_attention", "real_tokens"]


def remix_values(
    v: Tensor, mask: Tensor | None, alpha: Tensor | float, beta: Tensor | float | None,
    scaled: bool = False,
) -> Tensor:
    """V' = alpha * softmax^T(V) + beta * V on (B, H, N, D); beta None means 1 - alpha.

    ``scaled``: N * softmax^T(V) instead, N the number of real tokens of each sequence.
    """
    # Softmax in float32 at least: under bf16 a column softmax over many tokens loses most of
    # its mass to rounding.
    work = v.float() if v.dtype in LOW_PRECISION else v
    # One autograd node with a two-kernel backward (_Remix, below). With beta None the
    # forward is lerp(V, softmax^T(V), alpha): alpha = 0 returns V exactly and alpha = 1
    # returns softmax^T(V) exactly.
    count = real_tokens(v, mask) if scaled else None
    return remix_values_fused(work, mask, alpha, beta, count).to(v.dtype)


def remix_attention(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, bias: Tensor | None,
    dropout_p: float, scale: float | None, alpha: Tensor | float, beta: Tensor | float | None,
    scaled: bool = False,
) -> Tensor:
    """softmax(Q K^T * scale + bias) (alpha * softmax^T(V) + beta * V); beta None = 1 - alpha.

    ``scaled``: N * softmax^T(V) in place of softmax^T(V), N = real tokens per sequence.

    float32/float64 outside autocast: one SDPA call on the blended V' (exact; alpha = 0 with
    beta None is bitwise standard attention). Low precision: the split product described in
    the module docstring.
    """
    attn_mask = sdpa_mask(mask, bias)
    autocast = torch.is_autocast_enabled(v.device.type)
    if not autocast and v.dtype not in LOW_PRECISION:
        v_new = remix_values(v, mask, alpha, beta, scaled)
        return F.scaled_dot_product_attention(
            q, k, v_new, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
        )

    n, d, dv = v.shape[-2], q.shape[-1], v.shape[-1]
    soft = masked_token_softmax(v, mask, dtype=torch.float32)  # (B, H, N, Dv), columns sum to 1
    both = torch.cat([v, (soft * n).to(v.dtype)], dim=-1)  # (B, H, N, 2Dv), all O(1)
    if scale is None:
        scale = d**-0.5
    if d == dv:
        # The fused SDPA kernels need one head dim for q, k and v (otherwise SDPA falls back
        # to its unfused math path, 4-6x slower on CPU): zero-pad q and k to 2D, which leaves
        # q . k unchanged; the scale is explicit, so the padding does not alter it either.
        q = F.pad(q, (0, d))  # (B, H, Nq, 2D)
        k = F.pad(k, (0, d))  # (B, H, Nk, 2D)
    out = F.scaled_dot_product_attention(
        q, k, both, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
    )  # (B, H, Nq, 2Dv)
    plain, remixed = out.split(dv, dim=-1)  # S V, S (N softmax^T(V)), each (B, H, Nq, Dv)
    if beta is None:
        beta = 1.0 - alpha
    # In float32 (alpha, beta are float32 buffers or Python floats); alpha = 0, beta = 1
    # gives S V exactly.
    term = alpha * real_tokens(v, mask) / n if scaled else alpha / n
    result = plain.float() * beta + remixed.float() * term  # (B, H, Nq, Dv)
    return result if autocast else result.to(v.dtype)


def real_tokens(v: Tensor, mask: Tensor | None) -> Tensor | int:
    """N, the number of real tokens: (B, 1, 1, 1) float32 under a mask, else an int."""
    if mask is None:
        return v.shape[-2]
    return mask.sum(dim=-1, dtype=torch.float32)[:, None, None, None]


@register_attention("softmax_v", params={"alpha": 1.0})
def softmax_v(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None, alpha: Tensor | float = 1.0,
) -> Tensor:
    """softmax(QK^T) softmax^T(V); with alpha: V' = alpha*softmax^T(V) + (1-alpha)*V."""
    return remix_attention(
        q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale, alpha=alpha, beta=None
    )


@register_attention("alpha_remix", params={"alpha": 0.5, "beta": None})
def alpha_remix(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None,
    alpha: Tensor | float = 0.5, beta: Tensor | float | None = None,
) -> Tensor:
    """V' = alpha*softmax^T(V) + beta*V, beta = 1-alpha unless given."""
    return remix_attention(
        q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale, alpha=alpha, beta=beta
    )


# -- the fused blend -----------------------------------------------------------------------
# V' = alpha * c * softmax^T(V) + beta * V as one autograd node with a hand-written backward.
#
# Autograd would record a masked fill, a token softmax, an optional scale and a lerp, and in
# the backward run lerp's two gradient products, the softmax backward and an accumulation:
# about ten passes over a (B, H, N, D) tensor per attention site. The derivative is short,
#
#     dV = beta * g + alpha * c * p * (g - sum_t(g * p)),    p = softmax^T(V)
#
# so the backward here is two kernels (the softmax backward, then one lerp / fused add), and
# only p is saved (not V', not the filled copy). beta None means 1 - alpha: the forward is
# ``torch.lerp`` (alpha = 0 returns V itself, bitwise) and the backward ``lerp(g, c t, alpha)``.
# Gradients for alpha and beta are computed only when they require one (a learned alpha).
# Measured effect: see benchmarks/throughput.py and README ("Variant cost").


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a broadcast gradient back to the shape of ``like`` (a 0-d or (H, 1, 1) alpha)."""
    if like.dim() == 0:
        return grad.sum().to(like.dtype)
    lead = grad.dim() - like.dim()
    grad = grad.sum(dim=tuple(range(lead))) if lead else grad
    dims = tuple(i for i, n in enumerate(like.shape) if n == 1 and grad.shape[i] != 1)
    return (grad.sum(dim=dims, keepdim=True) if dims else grad).to(like.dtype)


class _Remix(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, v: Tensor, alpha: Tensor, beta: Tensor | None, mask: Tensor | None,
        count: Tensor | None,
    ) -> Tensor:
        x = v if mask is None else v.masked_fill(~mask[:, None, :, None], float("-inf"))
        p = torch.softmax(x, dim=-2)  # (B, H, N, D), each feature a distribution over tokens
        soft = p if count is None else p * count  # count: N real tokens (B, 1, 1, 1)
        out = torch.lerp(v, soft, alpha) if beta is None else alpha * soft + beta * v
        needs_params = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        ctx.save_for_backward(p, alpha, beta, count, v if needs_params else None)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor):  # type: ignore[override]
        p, alpha, beta, count, v = ctx.saved_tensors
        t = torch._softmax_backward_data(g, p, -2, p.dtype)  # p * (g - sum_t(g p))
        if count is not None:
            t = t * count
        grad_v = grad_alpha = grad_beta = None
        if ctx.needs_input_grad[0]:
            grad_v = torch.lerp(g, t, alpha) if beta is None else alpha * t + beta * g
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            soft = p if count is None else p * count
            if ctx.needs_input_grad[1]:
                d_alpha = g * (soft - v) if beta is None else g * soft
                grad_alpha = _sum_to(d_alpha, alpha)
            if ctx.needs_input_grad[2]:
                grad_beta = _sum_to(g * v, beta)
        return grad_v, grad_alpha, grad_beta, None, None


def remix_values_fused(
    v: Tensor, mask: Tensor | None, alpha: Tensor | float, beta: Tensor | float | None,
    count: Tensor | int | None = None,
) -> Tensor:
    """alpha * c * softmax^T(V) + beta * V (beta None: 1 - alpha) on a float32/64 (B, H, N, D);
    ``alpha`` / ``beta`` 0-d or (H, 1, 1), ``c`` = ``count``: None (1), an int or (B, 1, 1, 1).
    """
    def as_tensor(x: Any) -> Tensor | None:
        return None if x is None else torch.as_tensor(x, dtype=v.dtype, device=v.device)

    return _Remix.apply(v, as_tensor(alpha), as_tensor(beta), mask, as_tensor(count))
