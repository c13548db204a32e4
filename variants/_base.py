"""The one signature every attention variant implements.

An attention function maps queries, keys and values of shape ``(B, H, N, D)`` (batch, heads,
tokens, head dim; values may have their own last dim ``Dv``) to the attended values
``(B, H, Nq, Dv)``::

    fn(q, k, v, *, mask=None, dropout_p=0.0, scale=None, **params) -> Tensor

- ``mask``: optional key-padding mask ``(B, Nk)``, bool, True where the token is real. Padded
  keys get zero attention weight, and variants that transform V must exclude padded tokens
  from anything they compute over the token axis.
- ``dropout_p``: dropout on the attention weights (the caller passes 0.0 in eval mode).
- ``scale``: multiplier of q @ k^T; None means ``D ** -0.5``.
- ``params``: the variant's own parameters (e.g. ``alpha``), passed as 0-d tensors so that a
  schedule can change them every optimizer step without rebuilding the model or recompiling
  under ``torch.compile``. A parameter declared with default ``None`` is passed as ``None``
  when unset (e.g. ``beta`` of ``alpha_remix``, derived from alpha).

Every built-in computes the attention product through
``torch.nn.functional.scaled_dot_product_attention`` so that it gets the fused kernels.
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["AttentionFn", "sdpa_mask", "masked_token_softmax"]


class AttentionFn(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        scale: float | None = None,
        **params: torch.Tensor | None,
    ) -> torch.Tensor: ...


def sdpa_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Key-padding mask (B, Nk) -> boolean attn_mask (B, 1, 1, Nk) broadcast over heads/queries."""
    if mask is None:
        return None
    return mask[:, None, None, :]


def masked_token_softmax(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax^T(V): softmax over the token axis, separately for every feature of every head.

    v: (B, H, N, D); mask: (B, N) True = real token. Padded tokens get weight 0 and do not
    take part in the normalisation of the real ones.
    """
    if mask is not None:
        v = v.masked_fill(~mask[:, None, :, None], float("-inf"))  # (B, H, N, D)
    return torch.softmax(v, dim=-2)
