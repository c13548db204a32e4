"""The one signature every attention variant implements.

An attention function maps queries, keys and values of shape ``(B, H, N, D)`` (batch, heads,
tokens, head dim; values may have their own last dim ``Dv``) to the attended values
``(B, H, Nq, Dv)``::

    fn(q, k, v, *, mask=None, bias=None, dropout_p=0.0, scale=None, **params) -> Tensor

- ``mask``: optional key-padding mask ``(B, Nk)``, bool, True where the token is real. Padded
  keys get zero attention weight, and variants that transform V must exclude padded tokens
  from anything they compute over the token axis.
- ``bias``: optional additive score bias, a float tensor (float32 or the dtype of ``q``)
  broadcastable to ``(B, H, Nq, Nk)`` and added to ``q @ k^T * scale`` before the softmax:
  a relative position bias ``(1, H, Nq, Nk)``, a windowed one ``(nW*B, H, N, N)``, or an
  additive attention mask ``(B, 1, 1, Nk)`` / ``(B, 1, Nq, Nk)`` holding 0 and large negative
  (or -inf) values. The bias only reweights keys in the score softmax: it never decides which
  tokens are real. A value-side variant (softmax^T(V)) normalises over the tokens that
  ``mask`` keeps, so a padding mask must arrive as ``mask``, not only folded into ``bias``.
  ``mask`` and ``bias`` may both be given. A variant that declares no ``bias`` keyword still
  registers and runs wherever no bias is passed (the registry records ``accepts_bias``);
  a model that needs a bias refuses it with an error naming the variant.
- ``dropout_p``: dropout on the attention weights (the caller passes 0.0 in eval mode).
- ``scale``: multiplier of q @ k^T; None means ``D ** -0.5``.
- ``params``: the variant's own parameters (e.g. ``alpha``), passed as 0-d tensors so that a
  schedule can change them every optimizer step without rebuilding the model or recompiling
  under ``torch.compile``. A parameter declared with default ``None`` is passed as ``None``
  when unset (e.g. ``beta`` of ``alpha_remix``, derived from alpha).

The result has the dtype of ``v``, except that under autocast a variant may return float32
(as autocast's own precision-sensitive ops such as softmax do); the next autocast op casts it.

Every built-in computes the attention product through
``torch.nn.functional.scaled_dot_product_attention`` so that it gets the fused kernels.
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["AttentionFn", "LOW_PRECISION", "sdpa_mask", "masked_token_softmax"]

# Dtypes whose token-wise softmax / exp the built-ins compute in float32: a sum over many
# tokens loses most of its mass to rounding in them.
LOW_PRECISION = (torch.float16, torch.bfloat16)


class AttentionFn(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
        mask: torch.Tensor | None = None, bias: torch.Tensor | None = None, dropout_p: float = 0.0,
        scale: float | None = None, **params: torch.Tensor | None,
    ) -> torch.Tensor: ...


def sdpa_mask(
    mask: torch.Tensor | None, bias: torch.Tensor | None = None
) -> torch.Tensor | None:
    """SDPA's ``attn_mask`` from a key-padding ``mask`` (B, Nk) and a score ``bias``: None;
    the boolean (B, 1, 1, Nk) mask alone (SDPA's cheapest masked path); the bias alone; or
    the bias with padded keys at -inf, broadcast to their common shape (B, H, Nq, Nk)."""
    if mask is None:
        return bias
    keep = mask[:, None, None, :]  # (B, 1, 1, Nk)
    if bias is None:
        return keep
    return torch.where(keep, bias, float("-inf"))


def masked_token_softmax(
    v: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """softmax^T(V): (B, H, N, D) softmax over the tokens, for every feature of every head.

    Padded tokens (``mask`` (B, N) False) get weight 0 and stay out of the normalisation;
    ``dtype`` computes in that dtype (float32 for bf16 ``v``) without an up-cast copy.
    """
    if mask is not None:
        v = v.masked_fill(~mask[:, None, :, None], float("-inf"))  # (B, H, N, D)
    return torch.softmax(v, dim=-2, dtype=dtype)
