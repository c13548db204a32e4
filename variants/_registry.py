"""The attention-variant registry: one decorator, lookup by name, entry points, user files."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import inspect
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from variants._base import AttentionFn
from variants._learned import LearnedAlpha, split_learned

__all__ = [
    "AttentionEntry",
    "VariantSpec",
    "register_attention",
    "get_attention",
    "list_attention",
    "load_variant_file",
    "parse_variant",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "ablate.variants"


@dataclass(frozen=True)
class AttentionEntry:
    """A registered attention function and what the harness needs to know about it.

    ``accepts_bias`` is read once from the function's signature: True when it declares a
    ``bias`` keyword (the contract since the additive score bias was added). Functions written
    for the older contract (no ``bias``) keep working wherever no bias is passed.
    """

    name: str
    fn: AttentionFn
    description: str
    params: Mapping[str, float | None] = field(default_factory=dict)  # name -> default
    source: str = "builtin"
    accepts_bias: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepts_bias", _takes_keyword(self.fn, "bias"))

    def resolve_params(
        self, overrides: Mapping[str, float] | None = None
    ) -> dict[str, float | None]:
        """Defaults merged with overrides; unknown parameter names are an error."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            valid = ", ".join(self.params) or "none"
            raise ValueError(
                f"variant {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters: {valid}"
            )
        return {**self.params, **{k: float(v) for k, v in overrides.items()}}


_REGISTRY: dict[str, AttentionEntry] = {}
_entry_points_loaded = False


def register_attention(
    name: str | None = None,
    *,
    params: Mapping[str, float | None] | None = None,
    description: str | None = None,
    _source: str | None = None,
) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator that registers an attention function under ``name`` (default: its __name__).

    Args:
        name: registry name used by ``--variant``.
        params: the variant's parameters and their defaults, e.g. ``{"alpha": 1.0}``. These
            become buffers on every attention module and can be scheduled.
        description: one line for ``ablate variants`` (default: the docstring's first line).
    """

    def decorator(fn: AttentionFn) -> AttentionFn:
        key = name or fn.__name__
        doc = description or (inspect.getdoc(fn) or "").strip().splitlines()[0:1]
        line = doc if isinstance(doc, str) else (doc[0] if doc else "")
        source = _source or _guess_source(fn)
        if key in _REGISTRY and _REGISTRY[key].fn is not fn:
            warnings.warn(
                f"attention variant {key!r} re-registered (was {_REGISTRY[key].source}, "
                f"now {source})",
                stacklevel=2,
            )
        _REGISTRY[key] = AttentionEntry(key, fn, line, dict(params or {}), source)
        return fn

    return decorator


def _takes_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` declares a parameter ``name`` that can be passed by keyword.

    A bare ``**kwargs`` does not count: it would swallow a bias without applying it.
    """
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):  # no retrievable signature (e.g. a C builtin)
        return False
    return param is not None and param.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def _guess_source(fn: Callable) -> str:
    module = getattr(fn, "__module__", "") or ""
    return "builtin" if module.startswith("variants.") else module


def _load_entry_points() -> None:
    """Import every ``ablate.variants`` entry point once (lazily, on first lookup miss)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:  # a broken third-party plug-in must not break the harness
            warnings.warn(f"could not load attention variant entry point {ep.name!r}: {err}")
            continue
        if ep.name not in _REGISTRY:
            # A plain function (not decorated): register it under the entry-point name.
            params = getattr(obj, "ablate_params", None)
            register_attention(ep.name, params=params, _source=f"entry point {ep.value}")(obj)


def get_attention(name: str) -> AttentionEntry:
    """Look up a variant by name; unknown names raise ValueError listing the valid ones."""
    if name not in _REGISTRY:
        _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown attention variant {name!r}; valid variants: {valid}") from None


def list_attention(pattern: str = "*") -> list[AttentionEntry]:
    """All registered variants whose name matches the fnmatch ``pattern``, sorted by name."""
    _load_entry_points()
    return [_REGISTRY[n] for n in sorted(_REGISTRY) if fnmatch.fnmatch(n, pattern)]


def load_variant_file(path: str | Path) -> list[str]:
    """Import a user's Python file so that its ``@register_attention`` functions register.

    Returns the names it added. Errors name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"variant file {str(path)!r} does not exist")
    before = set(_REGISTRY)
    module_name = f"ablate_user_variants_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"variant file {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    added = sorted(set(_REGISTRY) - before)
    for name in added:
        s = _REGISTRY[name]
        _REGISTRY[name] = AttentionEntry(s.name, s.fn, s.description, s.params, f"file {path}")
    return added


def _parse_params(text: str) -> tuple[str, dict[str, float]]:
    """``name:key=value,...`` -> (name, {key: value}); only the syntax, no lookup."""
    name, _, rest = text.partition(":")
    params: dict[str, float] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(
                    f"variant parameters must look like key=value, got {item!r} in {text!r}"
                )
            try:
                params[key.strip()] = float(value)
            except ValueError:
                raise ValueError(
                    f"variant parameter {key.strip()!r} must be a number, got {value!r}"
                ) from None
    return name.strip(), params


def parse_variant(text: str) -> tuple[str, dict[str, float]]:
    """Parse ``name`` or ``name:key=value,key=value`` (e.g. ``alpha_remix:alpha=1,beta=1``)."""
    spec = VariantSpec.parse(text)
    return spec.name, dict(spec.params)


@dataclass(frozen=True)
class VariantSpec:
    """What a model runs: a registered variant's name and the parameter values given to it.

    The one parsed form of ``--variant``: ``VariantSpec.parse("alpha_remix:beta=1")`` is
    ``VariantSpec("alpha_remix", {"beta": 1.0})``. Model builders receive this object and
    never see the string. Construction checks the name and the parameter names against the
    registry, so a spec that exists is valid.

    Attributes:
        name: the registered name (``ablate variants``).
        params: overrides of the variant's defaults, e.g. ``{"beta": 1.0}`` (floats).
        learned: ``alpha=learned``: alpha is a trainable parameter, not a value in
            ``params`` (see :mod:`variants._learned`); None otherwise.
    """

    name: str = "softmax"
    params: Mapping[str, float] = field(default_factory=dict)
    learned: LearnedAlpha | None = None

    def __post_init__(self) -> None:
        entry = get_attention(self.name)  # unknown names raise, listing the valid ones
        params = {str(k): float(v) for k, v in dict(self.params).items()}
        entry.resolve_params(params)  # unknown parameter names raise, listing the valid ones
        if self.learned is not None and ("alpha" not in entry.params or "alpha" in params):
            raise ValueError(
                f"variant {entry.name!r}: alpha=learned needs a variant with an 'alpha' "
                "parameter and no fixed alpha next to it; variants with alpha: "
                + ", ".join(e.name for e in list_attention() if "alpha" in e.params)
            )
        object.__setattr__(self, "name", entry.name)
        object.__setattr__(self, "params", params)

    @classmethod
    def parse(cls, text: str) -> "VariantSpec":
        """``name`` or ``name:key=value,key=value``; errors name the bad part."""
        fixed, learned = split_learned(text)
        name, params = _parse_params(fixed)
        return cls(name, params, learned)

    @classmethod
    def coerce(
        cls, variant: "str | VariantSpec | None", params: Mapping[str, float] | None = None
    ) -> "VariantSpec":
        """A spec from a spec or the text form, with ``params`` merged over its own."""
        spec = variant if isinstance(variant, VariantSpec) else cls.parse(variant or "softmax")
        return spec.with_params(params) if params else spec

    @property
    def entry(self) -> AttentionEntry:
        """The registered function, its defaults and its source."""
        return get_attention(self.name)

    def with_params(self, params: Mapping[str, float]) -> "VariantSpec":
        """The same variant with ``params`` merged over this spec's own."""
        return VariantSpec(self.name, {**self.params, **dict(params)}, self.learned)

    def resolved_params(self) -> dict[str, float | None]:
        """Every parameter of the variant: its defaults merged with this spec's values."""
        return self.entry.resolve_params(self.params)

    def __str__(self) -> str:
        """The text form, ``name`` or ``name:key=value,...``."""
        items = [f"{k}={v:g}" for k, v in self.params.items()]
        if self.learned is not None:
            items.append(str(self.learned))
        return f"{self.name}:" + ",".join(items) if items else self.name
