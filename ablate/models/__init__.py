"""Compact transformer backbones: CCT, CVT, ViT-Lite (images) and their text versions.

The contract every backbone meets is written once in :mod:`ablate.models._contract`
(:class:`BackboneModel`, :class:`BuilderKwargs`); the registry is :mod:`ablate.models._registry`.
"""

from ablate.models._contract import BackboneModel, BuilderKwargs, VariantSitesMixin
from ablate.models._registry import create_model, list_models, register_alias, register_model
from ablate.models.compact import CompactTransformer, VariantAttention

__all__ = [
    "BackboneModel", "BuilderKwargs", "CompactTransformer", "VariantAttention",
    "VariantSitesMixin", "create_model", "list_models", "register_model", "register_alias",
]
