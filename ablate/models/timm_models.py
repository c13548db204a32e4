"""``timm:NAME``: timm's vision transformers with every self-attention running an ablate variant.

``create_model("timm:vit_tiny_patch16_224", num_classes=10, variant="softmax_v",
img_size=32, patch_size=4)`` builds the model with ``timm.create_model`` (unknown keyword
arguments go to it unchanged). Each supported attention module keeps its own layers and
weights, gets a :class:`~ablate.models.compact.VariantAttention` site as ``variant_site``,
and its class is switched to a subclass whose ``forward`` runs those layers around the site
instead of its own score computation (no timm code is copied):

- ``timm.layers.Attention`` (ViT, DeiT, DeiT-3, ViT with registers, ...): q, k, v from the
  module's ``qkv`` and norms; an attention mask, if the model passes one, becomes the
  additive score ``bias``.
- ``timm.models.swin_transformer.WindowAttention`` (Swin): the relative position bias plus,
  in shifted windows, timm's 0 / -100 region mask, together as ``bias`` (B*nW, H, N, N).

Any other attention-like module (``Attention`` or ``Attn`` in its class name, e.g.
``AttentionPoolLatent``, Swin-V2's or EVA's attention) is refused by name, so no
self-attention silently keeps its original computation.

Weights: ``pretrained=True`` reads timm's weights from the local Hugging Face / torch hub
cache only; ``download=True`` lets timm fetch them; ``pretrained_cfg_overlay=dict(file=PATH)``
loads a local file. Preprocessing (input size, mean, std) comes from timm's pretrained data
config, passed to the data loader through the registry entry.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import torch
import torch.nn as nn

from ablate.exceptions import ConfigError, first_line
from ablate.models._contract import plain_arch
from ablate.models._external import (
    SITE,
    ExternalModel,
    block_of,
    check_apply_to,
    mask_as_bias,
    require,
)
from ablate.models._registry import ModelEntry, register_model_source
from ablate.models.compact import VariantAttention
from variants import VariantSpec

__all__ = ["build_timm_model", "resolve_timm", "inject_timm_attention", "SUPPORTED"]

SUPPORTED = (
    "timm.layers.Attention (ViT, DeiT, ...)",
    "timm.models.swin_transformer.WindowAttention (Swin)",
)


# ablate's options -> the keywords of timm.create_model that mean the same
_TIMM_KWARGS = {
    "num_classes": "num_classes", "img_size": "img_size", "in_chans": "in_chans",
    "dropout": "drop_rate", "attention_dropout": "attn_drop_rate",
    "stochastic_depth": "drop_path_rate",
}


def _timm() -> Any:
    return require("timm", "timm")


# -- the replaced computations -----------------------------------------------------------


class _ViTAttentionForward:
    """``forward`` for timm's ``Attention``: its own layers around ablate's variant site."""

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if is_causal:
            raise ConfigError("ablate's variants run in bidirectional self-attention only; this "
                              "timm attention was called with is_causal=True")
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D)
        q, k = self.q_norm(q), self.k_norm(k)
        out = getattr(self, SITE)(q, k, v, bias=mask_as_bias(attn_mask, q), scale=self.scale,
                                  dropout_p=self.attn_drop.p if self.training else 0.0)
        out = self.norm(out.transpose(1, 2).reshape(B, N, self.attn_dim))  # (B, H, N, D) ->
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


class _WindowAttentionForward:
    """``forward`` for Swin's ``WindowAttention``: position bias (+ shift mask) as ``bias``."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, _ = x.shape  # B_ = batch * windows, N = tokens per window
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B_, H, N, D)
        bias = self._get_rel_pos_bias()  # (1, H, N, N)
        if mask is not None:
            # mask: (nW, N, N) with 0 / -100 between regions a cyclic shift brought together;
            # windows are batch-major, so row b * nW + w takes the mask of window w.
            n_win = mask.shape[0]
            bias = bias.unsqueeze(1) + mask.to(bias.dtype)[None, :, None]  # (1, nW, H, N, N)
            bias = bias.expand(B_ // n_win, -1, -1, -1, -1).reshape(B_, -1, N, N)
        out = getattr(self, SITE)(q, k, v, bias=bias, scale=self.scale,
                                  dropout_p=self.attn_drop.p if self.training else 0.0)
        out = out.transpose(1, 2).reshape(B_, N, -1)  # (B_, H, N, D) -> (B_, N, H*D)
        return self.proj_drop(self.proj(out))


# What each replaced forward reads off the module: checked once, so a timm version that
# renamed something fails at construction with the attribute's name, not mid-forward.
_NEEDS = {
    "vit": ("qkv", "num_heads", "head_dim", "q_norm", "k_norm", "attn_drop", "norm", "proj",
            "proj_drop", "scale", "attn_dim"),
    "swin": ("qkv", "num_heads", "attn_drop", "proj", "proj_drop", "scale", "_get_rel_pos_bias"),
}


@functools.lru_cache(maxsize=None)
def _adapted_class(base: type, kind: str) -> type:
    mixin = _ViTAttentionForward if kind == "vit" else _WindowAttentionForward
    return type(f"Ablate{base.__name__}", (mixin, base), {"__module__": __name__})


def _looks_like_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return "Attention" in name or "Attn" in name


def inject_timm_attention(model: nn.Module, variant: VariantSpec, *, name: str) -> list[str]:
    """Give every self-attention of a timm model a variant site (in place); return the
    adapted modules' names in model order. ConfigError for an attention module ablate
    cannot drive, or none at all."""
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    kinds = {Attention: "vit", WindowAttention: "swin"}
    adapted, unknown = [], []
    for mod_name, module in list(model.named_modules()):
        kind = kinds.get(type(module))
        if kind is None:
            inside = any(mod_name.startswith(a + ".") for a in adapted)
            if _looks_like_attention(module) and not inside:
                unknown.append(f"{mod_name} ({type(module).__module__}.{type(module).__name__})")
            continue
        missing = [a for a in _NEEDS[kind] if not hasattr(module, a)]
        if missing:
            raise ConfigError(f"{name}: {type(module).__name__} of this timm version lacks "
                              f"{', '.join(missing)}; ablate supports timm>=1.0.31")
        module.add_module(SITE, VariantAttention.of(variant, needs_bias=kind == "swin"))
        module.__class__ = _adapted_class(type(module), kind)
        adapted.append(mod_name)
    if unknown:
        raise ConfigError(f"{name}: ablate cannot drive these attention modules: "
                          f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}; "
                          f"supported: {'; '.join(SUPPORTED)}")
    if not adapted:
        raise ConfigError(f"{name}: no self-attention found; supported: {'; '.join(SUPPORTED)}")
    return adapted


# -- pretrained weights, offline by default ------------------------------------------------


def _cached_weights(cfg: Any) -> dict[str, Any] | None:
    """A ``pretrained_cfg_overlay`` pointing at the weights in the local cache, or None."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        default = ["model.safetensors", "pytorch_model.bin"]
        for filename in [cfg.hf_hub_filename] if cfg.hf_hub_filename else default:
            path = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(path, str):
                return {"file": path, "custom_load": False}
    if cfg.url:
        from urllib.parse import urlparse

        filename = os.path.basename(urlparse(cfg.url).path)
        path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        if os.path.isfile(path):
            return {"file": path}
    return None


def _pretrained_source(name: str, overlay: Mapping[str, Any] | None, download: bool) -> dict:
    """Keyword arguments for ``timm.create_model`` that load pretrained weights offline."""
    if (overlay and overlay.get("file")) or download:
        return {}
    cfg = _timm().models.get_pretrained_cfg(name)
    if cfg is None:
        raise ConfigError(f"timm:{name} has no pretrained weights; use pretrained=False")
    cached = _cached_weights(cfg)
    if cached is None:
        where = f"Hugging Face hub {cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
        raise ConfigError(f"timm:{name}: pretrained weights are not in the local cache ({where}); "
                          "pass --download to fetch them once, or load a local file with "
                          "pretrained_cfg_overlay=dict(file=PATH)")
    return {"pretrained_cfg_overlay": {**dict(overlay or {}), **cached}}


# -- building ------------------------------------------------------------------------------


def build_timm_model(
    timm_name: str, *, variant: VariantSpec = VariantSpec(), apply_to: str = "attention",
    pretrained: bool = False, download: bool = False, **kwargs: Any,
) -> ExternalModel:
    """Build ``timm.create_model(timm_name, ...)`` with every self-attention on ``variant``.

    ``timm_name`` may carry a pretrained tag (``NAME.TAG``); ``apply_to`` must be
    ``attention``; ``kwargs``: the rest of :class:`~ablate.models.BuilderKwargs` under timm's
    names (``dropout`` is ``drop_rate``, ...; timm replaces a pretrained head of another
    class count) and anything ``timm.create_model`` or the model accepts.
    """
    timm = _timm()
    name = f"timm:{timm_name}"
    check_apply_to(apply_to, name)
    arch = plain_arch(dict(kwargs, variant=variant, apply_to=apply_to))
    timm_kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_KWARGS}
    for ours, theirs in _TIMM_KWARGS.items():
        if kwargs.get(ours) is not None:
            timm_kwargs.setdefault(theirs, kwargs[ours])
    if pretrained:
        timm_kwargs.update(
            _pretrained_source(timm_name, timm_kwargs.get("pretrained_cfg_overlay"), download)
        )
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, **timm_kwargs)
    except RuntimeError as err:
        if "unknown model" in str(err).lower():
            raise ConfigError(_unknown(timm_name)) from None
        raise ConfigError(f"{name}: {first_line(err)}") from None
    except (OSError, ValueError) as err:  # a missing file, a failed download, a bad size
        raise ConfigError(f"{name}: {first_line(err)}") from None
    adapted = inject_timm_attention(model, variant, name=name)
    blocks = list(dict.fromkeys(block_of(model, a) for a in adapted))
    head = model.pretrained_cfg.get("classifier") or "head"
    heads = (head,) if isinstance(head, str) else tuple(head)
    # The rebuilt model gets its weights from a state dict, never from the cache again.
    return ExternalModel(model, name=name, arch=arch, blocks=blocks, heads=heads)


def _unknown(timm_name: str) -> str:
    timm = _timm()
    base = timm_name.split(".")[0]
    close = timm.list_models(f"*{base[:12]}*")[:5]
    hint = f" (close: {', '.join(close)})" if close else ""
    return (
        f"unknown timm model {timm_name!r}{hint}; list them with "
        "python -c \"import timm; print(timm.list_models('vit_*'))\""
    )


def resolve_timm(timm_name: str, *, download: bool = False) -> ModelEntry:
    """The registry entry for ``timm:NAME[.TAG]``: task ``image``, timm's preprocessing in
    extras. ``download`` is unused (timm describes its models without the network)."""
    timm = _timm()
    if not timm.is_model(timm_name):
        raise ConfigError(_unknown(timm_name))
    defaults: dict[str, Any] = {"library": "timm", "timm_name": timm_name}
    extras: dict[str, Any] = {}
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is not None:
        data = timm.data.resolve_data_config(pretrained_cfg=cfg.to_dict())
        chans, _, width = data["input_size"]
        defaults.update(img_size=int(width), in_chans=int(chans))
        extras["preprocessing"] = {
            "img_size": int(width), "in_chans": int(chans),
            "mean": tuple(float(m) for m in data["mean"]),
            "std": tuple(float(s) for s in data["std"]),
            "interpolation": data.get("interpolation", "bilinear"),
            "crop_pct": float(data.get("crop_pct", 1.0)),
        }
    return ModelEntry(
        f"timm:{timm_name}", functools.partial(build_timm_model, timm_name), "image", defaults,
        f"timm {timm_name} with every self-attention on the chosen variant", extras, external=True,
    )


register_model_source("timm", resolve_timm)
