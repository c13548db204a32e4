"""V' = alpha * c * softmax^T(V) + beta * V as one autograd node with a hand-written backward.

Autograd would record a masked fill, a token softmax, an optional scale and a lerp, and in
the backward run lerp's two gradient products, the softmax backward and an accumulation:
about ten passes over a (B, H, N, D) tensor per attention site. The derivative is short,

    dV = beta * g + alpha * c * p * (g - sum_t(g * p)),    p = softmax^T(V)

so the backward here is two kernels (the softmax backward, then one lerp / fused add), and
only p is saved (not V', not the filled copy). beta None means 1 - alpha: the forward is
``torch.lerp`` (alpha = 0 returns V itself, bitwise) and the backward ``lerp(g, c t, alpha)``.
Gradients for alpha and beta are computed only when they require one (a learned alpha).
Measured effect: see benchmarks/throughput.py and README ("Variant cost").
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["remix_values_fused"]


def _sum_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
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
        ctx: Any,
        v: torch.Tensor,
        alpha: torch.Tensor,
        beta: torch.Tensor | None,
        mask: torch.Tensor | None,
        count: torch.Tensor | None,
    ) -> torch.Tensor:
        x = v if mask is None else v.masked_fill(~mask[:, None, :, None], float("-inf"))
        p = torch.softmax(x, dim=-2)  # (B, H, N, D), each feature a distribution over tokens
        soft = p if count is None else p * count  # count: N real tokens (B, 1, 1, 1)
        out = torch.lerp(v, soft, alpha) if beta is None else alpha * soft + beta * v
        needs_params = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        ctx.save_for_backward(p, alpha, beta, count, v if needs_params else None)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor):  # type: ignore[override]
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
    v: torch.Tensor, mask: torch.Tensor | None, alpha: torch.Tensor | float,
    beta: torch.Tensor | float | None, count: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """alpha * c * softmax^T(V) + beta * V (beta None: 1 - alpha) on a float32/64 (B, H, N, D).

    Args:
        v: the values, float32 or float64 (low precision goes through the split product).
        mask: (B, N), True = real token; padded tokens get softmax weight 0.
        alpha / beta: floats or tensors broadcastable to ``v`` (0-d, or (H, 1, 1) per head).
        count: c, the scale of softmax^T(V): None (1), an int, or (B, 1, 1, 1).
    """
    alpha = torch.as_tensor(alpha, dtype=v.dtype, device=v.device)
    if beta is not None:
        beta = torch.as_tensor(beta, dtype=v.dtype, device=v.device)
    if count is not None:
        count = torch.as_tensor(count, dtype=v.dtype, device=v.device)
    return _Remix.apply(v, alpha, beta, mask, count)
