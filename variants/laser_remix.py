"""The alpha blend from standard attention toward LASER.

    out = (1 - alpha) * S V + alpha * log(S exp(V)),    S = softmax(Q K^T * scale + bias)

alpha = 0 is standard attention exactly (bitwise, in training too): S V comes from the very
same ``scaled_dot_product_attention`` call that ``softmax`` makes, and the blend
``S V + alpha * (LASER - S V)`` adds an exact zero. alpha = 1 is LASER.

The two products need two SDPA calls (LASER's log sits between S exp(V) and the blend, so
one call on ``[V, exp(V - m)]`` would do, but its S V half is not bitwise the plain call's:
the padded head dim changes the kernel's summation order). With attention dropout both calls
must drop the same weights: the second call replays the random-number state the first one
started from, so both draw the same dropout mask (same shapes, same kernel, same draws), and
the generator ends where a single ``softmax`` call would have left it.

Low precision: LASER's part is computed as in :mod:`variants.laser` (float32 shift and
log); the blend is done in float32 and returned as float32 under autocast, cast back to the
input dtype for plain bf16/fp16 tensors. Both halves are O(|V|), so bf16 loses nothing that
matters here (unlike softmax^T(V), whose entries are ~1/N).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from variants._base import LOW_PRECISION, sdpa_mask
from variants._registry import register_attention
from variants.laser import laser_parts

__all__ = ["laser_remix"]


@register_attention("laser_remix", params={"alpha": 0.5})
def laser_remix(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None, alpha: Tensor | float = 0.5,
) -> Tensor:
    """(1-alpha)*softmax(QK^T)V + alpha*LASER; alpha=0 is standard attention exactly."""
    # With dropout, the second call replays the generator state the first one started from,
    # and fork_rng leaves the generator where the first call left it.
    replay, cuda = dropout_p > 0.0, v.device.type == "cuda"
    if replay:
        start = torch.cuda.get_rng_state(v.device) if cuda else torch.get_rng_state()
    plain = F.scaled_dot_product_attention(
        q, k, v, attn_mask=sdpa_mask(mask, bias), dropout_p=dropout_p, scale=scale
    )  # (B, H, Nq, Dv): exactly softmax's call
    with torch.random.fork_rng(devices=[v.device] if cuda else [], enabled=replay):
        if replay and cuda:
            torch.cuda.set_rng_state(start, v.device)
        elif replay:
            torch.set_rng_state(start)
        lse = laser_parts(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale)
    autocast = torch.is_autocast_enabled(v.device.type)
    work = plain.float() if (autocast or plain.dtype in LOW_PRECISION) else plain
    lse = lse.to(work.dtype)
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(work.dtype)
    out = work + alpha * (lse - work)  # alpha = 0: ``work`` plus an exact zero
    return out if autocast else out.to(v.dtype)
