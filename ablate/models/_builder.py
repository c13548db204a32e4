"""The one private builder behind every image backbone family's named sizes."""

from __future__ import annotations

from typing import Any, Mapping

import variants
from ablate.models._blocks import CompactTransformer, ConvTokenizer, TransformerClassifier

__all__ = ["build_image_model", "split_variant", "register_image_model", "PATCH_TOKENIZER"]


def split_variant(variant: str, variant_params: Mapping[str, float] | None) -> tuple[str, dict]:
    """``"alpha_remix:alpha=1,beta=1"`` -> ("alpha_remix", {...}) merged with explicit params."""
    name, parsed = variants.parse_variant(variant)
    return name, {**parsed, **dict(variant_params or {})}


def build_image_model(
    *,
    name: str,
    num_layers: int,
    num_heads: int,
    dim: int,
    mlp_ratio: float,
    kernel: int,
    n_conv_layers: int,
    stride: int,
    padding: int,
    conv_bias: bool,
    conv_activation: bool,
    conv_max_pool: bool,
    seq_pool: bool,
    num_classes: int = 10,
    img_size: int = 32,
    in_chans: int = 3,
    positional_embedding: str = "learnable",
    norm_placement: str = "cct",
    dropout: float = 0.0,
    attention_dropout: float = 0.1,
    stochastic_depth: float = 0.1,
    variant: str = "softmax",
    variant_params: Mapping[str, float] | None = None,
    apply_to: str = "attention",
    **unknown: Any,
) -> CompactTransformer:
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}")
    variant, variant_params = split_variant(variant, variant_params)
    arch = {k: v for k, v in locals().items() if k not in ("unknown",)}
    tokenizer = ConvTokenizer(
        in_chans, dim, n_conv_layers, kernel, stride, padding,
        bias=conv_bias, activation=conv_activation, max_pool=conv_max_pool,
    )
    classifier = TransformerClassifier(
        dim=dim,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_hidden=int(dim * mlp_ratio),
        num_classes=num_classes,
        seq_len=tokenizer.sequence_length(img_size),
        seq_pool=seq_pool,
        positional_embedding=positional_embedding,
        dropout=dropout,
        attention_dropout=attention_dropout,
        stochastic_depth=stochastic_depth,
        norm_placement=norm_placement,
        variant=variant,
        variant_params=variant_params,
        apply_to=apply_to,
    )
    arch["variant_params"] = dict(variant_params)
    return CompactTransformer(tokenizer, classifier, name=name, arch=arch)


# The CVT / ViT-Lite tokenizer: one 4x4 patchifying conv with bias, no activation, no pool.
PATCH_TOKENIZER = dict(
    kernel=4, n_conv_layers=1, stride=4, padding=0,
    conv_bias=True, conv_activation=False, conv_max_pool=False,
)


def register_image_model(arch: dict, doc: str) -> None:
    """Register ``arch["name"]``: a builder that merges the caller's kwargs over ``arch``."""
    from ablate.models._registry import register_model

    def builder(**kwargs):
        return build_image_model(**{**arch, **kwargs})

    register_model(arch["name"], builder, task="image", defaults=arch, doc=doc)
