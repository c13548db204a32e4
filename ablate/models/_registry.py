"""Backbone registry: ``register_model``, ``create_model``, ``list_models``, ``model_entry``.

A backbone is one file in ``ablate/models/``: every public module of this package is
imported on first use of the registry (automatic discovery), so a new file that calls
:func:`register_model` is all it takes. Packages outside ablate register through the
``ablate.models`` entry-point group (``name = my_pkg.models``: the module is imported).

Names from other libraries are resolved by prefix: ``timm:NAME`` or ``hf:NAME_OR_DIR``
go to the resolver a module registered with :func:`register_model_source`.

Every entry carries what the rest of ablate needs to know *before* building the model
(its task, its default architecture, e.g. the native ``img_size`` that sizes the data,
whether it comes from another library), so nothing downstream reads side channels off the
builder or the name.

Builders receive the keyword arguments of :class:`~ablate.models._contract.BuilderKwargs`,
with the variant as a parsed :class:`~variants.VariantSpec`. Calling an entry
(``entry(**kwargs)``, which :func:`create_model` does) is the one place where a variant
given as text (``variant="alpha_remix:beta=1"``, ``variant_params={...}``, as users and
saved ``arch`` dicts give it) becomes a ``VariantSpec``.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch.nn as nn

__all__ = [
    "ModelEntry",
    "register_model",
    "register_alias",
    "register_model_source",
    "create_model",
    "list_models",
    "model_entry",
    "TASKS",
    "ENTRY_POINT_GROUP",
]

TASKS = ("image", "text")
ENTRY_POINT_GROUP = "ablate.models"


@dataclass(frozen=True)
class ModelEntry:
    """A registered backbone.

    Attributes:
        name: the registered name.
        build: ``build(**kwargs) -> nn.Module``; kwargs override ``defaults``.
        task: ``image`` or ``text``: which data the model consumes.
        defaults: the architecture (layers, heads, dim, img_size, ...), shown by
            ``ablate models``; ``img_size`` sizes the data when the user gives none.
        doc: one line for listings.
        extras: facts a model source wants to pass on (e.g. a library's preprocessing).
        external: the model comes from another library (``timm:`` / ``hf:``): it takes the
            library's own architecture, ``pretrained`` and ``download``, and none of
            ablate's architecture options (positional embedding, norm placement).
    """

    name: str
    build: Callable[..., nn.Module]
    task: str = "image"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)
    external: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"model {self.name!r}: task {self.task!r} is not valid; choose one of "
                f"{', '.join(TASKS)}"
            )

    def __call__(self, **kwargs: Any) -> nn.Module:
        """Build the model; ``variant`` may be a VariantSpec or its text form (with
        ``variant_params`` merged over it)."""
        from ablate.models._contract import variant_from_kwargs

        return self.build(**variant_from_kwargs(kwargs))

    @property
    def img_size(self) -> int | None:
        return self.defaults.get("img_size") if self.task == "image" else None


_MODELS: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}
_SOURCES: dict[str, Callable[[str], ModelEntry]] = {}
_discovered = False


def register_model(
    name: str,
    builder: Callable[..., nn.Module] | None = None,
    *,
    task: str = "image",
    defaults: Mapping[str, Any] | None = None,
    doc: str | None = None,
) -> Any:
    """Register ``builder(**kwargs) -> nn.Module`` under ``name`` (warns on a duplicate).

    Use as a call, ``register_model("cct_2_3x2_32", builder, defaults=arch)``, or as a
    decorator, ``@register_model("my_net", task="text")``.

    Args:
        name: the name users pass to ``--model``.
        builder: the factory; omitted when used as a decorator.
        task: ``image`` or ``text``.
        defaults: the architecture the builder fills in (``ablate models`` shows it).
        doc: one line for listings (default: the builder's docstring's first line).
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            warnings.warn(f"model {name!r} registered twice; the later one wins", stacklevel=3)
        line = doc if doc is not None else (fn.__doc__ or "").strip().split("\n")[0]
        _MODELS[name] = ModelEntry(name, fn, task, dict(defaults or {}), line)
        return fn

    return add if builder is None else add(builder)


def register_alias(alias: str, name: str) -> None:
    """Accept ``alias`` wherever ``name`` is accepted (e.g. official ``vit_7_4_32``)."""
    _ALIASES[alias] = name


def register_model_source(prefix: str, resolve: Callable[[str], ModelEntry]) -> None:
    """Resolve every ``PREFIX:REST`` model name with ``resolve(REST) -> ModelEntry``."""
    if prefix in _SOURCES:
        warnings.warn(
            f"model source {prefix!r} registered twice; the later one wins", stacklevel=2
        )
    _SOURCES[prefix] = resolve


def _discover() -> None:
    """Import every public module of this package, then entry-point modules, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("ablate.models")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"ablate.models.{info.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(ep.value.split(":")[0])
        except Exception as err:  # a broken plug-in must not hide the built-ins
            warnings.warn(f"model entry point {ep.name!r} failed to load: {err}", stacklevel=2)


def model_entry(name: str, *, download: bool = False) -> ModelEntry:
    """The entry for ``name`` (an alias or ``PREFIX:REST`` too).

    Args:
        name: a registered name, an alias, or ``PREFIX:REST``.
        download: a source may fetch what it needs to describe the model (a Hugging Face
            config) when it is not cached; never done otherwise.

    Raises:
        ValueError: unknown name or prefix; the message lists the valid choices.
    """
    _discover()
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix not in _SOURCES:
            raise ValueError(
                f"unknown model source {prefix!r} in {name!r}; valid prefixes: "
                f"{', '.join(f'{p}:' for p in sorted(_SOURCES)) or 'none'}"
            )
        entry = _SOURCES[prefix](rest, download=True) if download else _SOURCES[prefix](rest)
        return entry if entry.external else replace(entry, external=True)
    key = _ALIASES.get(name, name)
    if key not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODELS) + list(_ALIASES), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown model {name!r}; {hint}see `ablate models` for the {len(_MODELS)} "
            f"registered names (e.g. {', '.join(sorted(_MODELS)[:4])})"
            + (f", or {', '.join(f'{p}:NAME' for p in sorted(_SOURCES))}" if _SOURCES else "")
        )
    return _MODELS[key]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Keyword arguments that are None are dropped, so unset CLI
    flags never override a model's own defaults.

    Common kwargs (:class:`~ablate.models._contract.BuilderKwargs`): num_classes, img_size,
    in_chans, variant (a VariantSpec, ``name`` or ``name:key=value,...``), variant_params,
    apply_to, positional_embedding, norm_placement, dropout, attention_dropout,
    stochastic_depth.
    """
    return model_entry(name)(**{k: v for k, v in kwargs.items() if v is not None})


def list_models(pattern: str = "*", *, include_aliases: bool = False) -> list[str]:
    """Registered model names matching the fnmatch ``pattern``, sorted."""
    _discover()
    names = set(_MODELS) | (set(_ALIASES) if include_aliases else set())
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))
