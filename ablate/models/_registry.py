"""Backbone registry: ``register_model`` decorator, ``create_model`` factory, ``list_models``."""

from __future__ import annotations

import fnmatch
import warnings
from typing import Any, Callable

import torch.nn as nn

__all__ = ["register_model", "register_alias", "create_model", "list_models", "model_entry"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}


def register_model(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder(**kwargs) -> nn.Module`` under ``name`` (warns on a duplicate)."""
    if name in _MODELS:
        warnings.warn(f"model {name!r} registered twice; the later one wins", stacklevel=2)
    _MODELS[name] = builder
    return builder


def register_alias(alias: str, name: str) -> None:
    """Accept ``alias`` wherever ``name`` is accepted (e.g. official ``vit_7_4_32``)."""
    _ALIASES[alias] = name


def _ensure_loaded() -> None:
    # Importing the family modules registers their names.
    from ablate.models import cct, cvt, text, vit_lite  # noqa: F401


def model_entry(name: str) -> Callable[..., nn.Module]:
    _ensure_loaded()
    key = _ALIASES.get(name, name)
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return _MODELS[key]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Keyword arguments that are None are dropped, so unset CLI
    flags never override a model's own defaults.

    Common kwargs: num_classes, img_size, in_chans, variant (``name`` or
    ``name:key=value,...``), variant_params, apply_to, positional_embedding, norm_placement,
    dropout, attention_dropout, stochastic_depth.
    """
    builder = model_entry(name)
    return builder(**{k: v for k, v in kwargs.items() if v is not None})


def list_models(pattern: str = "*", *, include_aliases: bool = False) -> list[str]:
    """Registered model names matching the fnmatch ``pattern``, sorted."""
    _ensure_loaded()
    names = set(_MODELS) | (set(_ALIASES) if include_aliases else set())
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))
