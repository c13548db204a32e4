"""Compact transformer backbones: CCT, CVT, ViT-Lite (images) and their text versions."""

from ablate.models._blocks import CompactTransformer, VariantAttention
from ablate.models._registry import create_model, list_models, register_alias, register_model

__all__ = [
    "CompactTransformer",
    "VariantAttention",
    "create_model",
    "list_models",
    "register_model",
    "register_alias",
]
