"""The one private builder behind every image backbone family's named sizes."""

from __future__ import annotations

from typing import Any

from ablate.models._blocks import CompactTransformer, ConvTokenizer, TransformerClassifier
from ablate.models._contract import variant_arch
from variants import VariantSpec

__all__ = ["build_image_model", "register_image_model", "PATCH_TOKENIZER"]


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
    variant: VariantSpec = VariantSpec(),
    apply_to: str = "attention",
    **unknown: Any,
) -> CompactTransformer:
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}")
    arch = {k: v for k, v in locals().items() if k not in ("unknown",)}
    # plain data in arch (what checkpoints store): the variant's name and its values
    arch.update(variant_arch(variant))
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
        apply_to=apply_to,
    )
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
