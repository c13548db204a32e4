"""Backbone registry: ``register_model``, ``create_model``, ``list_models``, ``model_entry``.

A backbone is one file in ``ablate/models/``: every public module of this package is
imported on first use of the registry, so a new file that calls :func:`register_model` is
all it takes; other packages use the ``ablate.models`` entry-point group (the module is
imported). ``timm:NAME`` / ``hf:NAME_OR_DIR`` go to the resolver registered for the prefix
with :func:`register_model_source`. An entry says what ablate needs *before* building the
model (task, default architecture, whether it comes from another library). Calling an
entry is the one place where a variant given as text becomes a ``VariantSpec``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch.nn as nn

from variants import Registry

__all__ = [
    "ModelEntry", "MODELS", "register_model", "register_alias", "register_model_source",
    "create_model", "list_models", "model_entry", "TASKS", "ENTRY_POINT_GROUP",
]

TASKS = ("image", "text")
ENTRY_POINT_GROUP = "ablate.models"


@dataclass(frozen=True)
class ModelEntry:
    """A registered backbone.

    ``external``: the model comes from another library (``timm:`` / ``hf:``): it takes the
    library's own architecture, ``pretrained`` and ``download``, and none of ablate's
    architecture options (positional embedding, norm placement).
    """

    name: str
    build: Callable[..., nn.Module]  # build(**kwargs); kwargs override defaults
    task: str = "image"  # which data the model consumes
    # the architecture shown by `ablate models`; img_size sizes the data when none is given
    defaults: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""  # one line for listings
    extras: Mapping[str, Any] = field(default_factory=dict)  # e.g. a library's preprocessing
    external: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"model {self.name!r}: task {self.task!r} is not valid; choose one "
                             f"of {', '.join(TASKS)}")

    def __call__(self, **kwargs: Any) -> nn.Module:
        """Build the model; ``variant`` may be a VariantSpec or its text form (with
        ``variant_params`` merged over it)."""
        from ablate.models._contract import variant_from_kwargs

        return self.build(**variant_from_kwargs(kwargs))

    @property
    def img_size(self) -> int | None:
        return self.defaults.get("img_size") if self.task == "image" else None


def _discover() -> None:
    """Import every public module of this package: each registers its family."""
    package = importlib.import_module("ablate.models")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"ablate.models.{info.name}")


# Entry points name modules that register when imported (``name = my_pkg.models``).
MODELS: Registry[ModelEntry] = Registry("model", "models", ENTRY_POINT_GROUP, discover=_discover)
_SOURCES: Registry[Callable[..., ModelEntry]] = Registry("model source", "prefixes", None)
_ALIASES: dict[str, str] = {}


def register_model(
    name: str, builder: Callable[..., nn.Module] | None = None, *, task: str = "image",
    defaults: Mapping[str, Any] | None = None, doc: str | None = None,
) -> Any:
    """Register ``builder(**kwargs) -> nn.Module`` as ``--model name`` (warns on a duplicate).

    A call, ``register_model("cct_2_3x2_32", builder, defaults=arch)``, or a decorator,
    ``@register_model("my_net", task="text")``. ``defaults``: the architecture the builder
    fills in (``ablate models`` shows it); ``doc``: default the docstring's first line.
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        line = doc if doc is not None else (fn.__doc__ or "").strip().split("\n")[0]
        MODELS.add(name, ModelEntry(name, fn, task, dict(defaults or {}), line), stacklevel=4)
        return fn

    return add if builder is None else add(builder)


def register_alias(alias: str, name: str) -> None:
    """Accept ``alias`` wherever ``name`` is accepted (e.g. official ``vit_7_4_32``)."""
    _ALIASES[alias] = name


def register_model_source(prefix: str, resolve: Callable[..., ModelEntry]) -> None:
    """Resolve every ``PREFIX:REST`` model name with ``resolve(REST) -> ModelEntry``."""
    _SOURCES.add(prefix, resolve)


def model_entry(name: str, *, download: bool = False) -> ModelEntry:
    """The entry for ``name`` (an alias or ``PREFIX:REST`` too); ValueError listing the
    valid choices otherwise. ``download``: a source may fetch what describes the model (a
    Hugging Face config) when it is not cached; never done otherwise."""
    MODELS.load_plugins()
    prefix, sep, rest = name.partition(":")
    if sep:
        resolve = _SOURCES.get(prefix)  # an unknown prefix raises, listing the valid ones
        entry = resolve(rest, download=True) if download else resolve(rest)
        return entry if entry.external else replace(entry, external=True)
    key = _ALIASES.get(name, name)
    if key in MODELS.entries:
        return MODELS.entries[key]
    close = difflib.get_close_matches(name, list(MODELS.entries) + list(_ALIASES), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"unknown model {name!r}; {hint}see `ablate models` for the {len(MODELS.entries)} "
        f"registered names (e.g. {', '.join(MODELS.names()[:4])}), or "
        + ", ".join(f"{p}:NAME" for p in _SOURCES.names())
    )


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Keyword arguments that are None are dropped, so unset CLI
    flags never override a model's own defaults (see :class:`~ablate.models.BuilderKwargs`;
    ``variant`` may be a VariantSpec, ``name`` or ``name:key=value,...``)."""
    return model_entry(name)(**{k: v for k, v in kwargs.items() if v is not None})


def list_models(pattern: str = "*", *, include_aliases: bool = False) -> list[str]:
    """Registered model names matching the fnmatch ``pattern``, sorted."""
    names = MODELS.names() + (list(_ALIASES) if include_aliases else [])  # discovers first
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))
