"""LASER attention: log(softmax(Q K^T * scale + bias) exp(V)) (Duvvuri & Dhillon, ICML 2025).

The attention product runs on exp(V) and the log is taken afterwards, per feature:

    out = log(S exp(V)),    S = softmax(Q K^T * scale + bias)

so the output is a log-sum-exp of the values weighted by the attention scores (a soft max
over the attended tokens instead of a weighted mean). Per feature,
S softmax^T(V) = S exp(V) / sum_t exp(V_t), so softmax_v's output is exp(LASER) over a
per-feature constant: the two are one family.

Stability ("log-weighted-sum-exp"): with m the per-feature max of V over the REAL tokens
(the tokens ``mask`` keeps; ``bias`` only reweights keys),

    out = m + log(S exp(V - m)),

exact for any constant m, and exp(V - m) lies in (0, 1]: it cannot overflow in any dtype
(bf16 and fp16 included), and padded tokens, whatever garbage they hold, become exactly 0
before the exponent, so they can neither overflow nor win the max. m is a constant of the
formula, so it is detached (the gradient is the same, computed without a path through amax).
The sum S exp(V - m) is >= S[argmax] > 0 in exact arithmetic; it can underflow only when the
token holding the max gets (almost) no attention and every other one is far below it. The
log is then clamped at the smallest normal number of the dtype SDPA returned (a finite
output, m - 87 in float32 / bf16; fp16 under autocast underflows sooner, below ~6e-5).

Low precision (bf16/fp16 tensors, or an autocast region, where SDPA runs in bf16): m and
exp(V - m) are computed in float32, SDPA gets exp(V - m) in its own dtype (all entries in
(0, 1], so bf16 keeps ~3 significant digits of each), and the log and the shift are done in
float32. Under autocast the float32 result is returned (as autocast's own softmax does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from variants._base import LOW_PRECISION, sdpa_mask
from variants._registry import register_attention

__all__ = ["laser", "laser_parts", "shifted_exp"]


def shifted_exp(v: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, exp(V - m)): m (B, H, 1, Dv) the per-feature max of V (B, H, N, Dv) over the
    real tokens, detached; padded tokens get exp(V - m) = 0 exactly. float32 for a
    low-precision ``v``, ``v``'s dtype otherwise."""
    work = v.float() if v.dtype in LOW_PRECISION else v
    if mask is not None:
        # -inf before the exponent: exp(-inf) = 0 with a zero gradient (a huge pad would
        # give exp = inf and, in the backward, 0 * inf = NaN).
        work = work.masked_fill(~mask[:, None, :, None], float("-inf"))
    m = work.amax(dim=-2, keepdim=True).detach()  # (B, H, 1, Dv)
    return m, torch.exp(work - m)


def laser_parts(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, bias: Tensor | None,
    dropout_p: float, scale: float | None,
) -> Tensor:
    """LASER's output (B, H, Nq, Dv), float32 for low-precision inputs or under autocast,
    ``v``'s dtype otherwise."""
    m, e = shifted_exp(v, mask)
    if not torch.is_autocast_enabled(v.device.type):
        e = e.to(v.dtype)  # plain bf16/fp16 models attend in their own dtype
    y = F.scaled_dot_product_attention(
        q, k, e, attn_mask=sdpa_mask(mask, bias), dropout_p=dropout_p, scale=scale
    )  # (B, H, Nq, Dv), S exp(V - m)
    tiny = torch.finfo(y.dtype).tiny
    y = y.to(m.dtype) if y.dtype != m.dtype else y
    return m + torch.log(y.clamp_min(tiny))


@register_attention("laser")
def laser(
    q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
    dropout_p: float = 0.0, scale: float | None = None,
) -> Tensor:
    """LASER: log(softmax(QK^T) exp(V)), max-shifted per feature over real tokens."""
    out = laser_parts(q, k, v, mask=mask, bias=bias, dropout_p=dropout_p, scale=scale)
    return out if torch.is_autocast_enabled(v.device.type) else out.to(v.dtype)
