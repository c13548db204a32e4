"""The attention-variant registry, and the generic :class:`Registry` every ablate registry uses.

One class holds the machinery that the variants, the backbones (``ablate.models``) and the
alpha schedules (``ablate.trial.schedules``) share: a warning when a name is registered
again with something else, fnmatch listing, plug-ins from an entry-point group, and lookup
errors that list the valid names. It lives here because ``variants`` is the bottom layer
(pure torch and the standard library).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import inspect
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar

from variants._base import AttentionFn
from variants._learned import LEARNED_KEYS, LearnedAlpha, number, split_items

__all__ = [
    "Registry", "AttentionEntry", "VariantSpec", "VARIANTS", "register_attention",
    "get_attention", "list_attention", "load_variant_file", "parse_variant", "ENTRY_POINT_GROUP",
]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry for one kind of thing (``kind``, ``plural`` name it in messages),
    extensible by the entry points of ``group`` (None: no plug-ins).

    ``adopt(entry_point, loaded_object)`` registers an entry point that did not register
    itself on loading (a plain function); ``discover()`` imports the modules that register
    the built-ins, before the first lookup.
    """

    def __init__(
        self, kind: str, plural: str, group: str | None,
        adopt: Callable[[Any, Any], None] | None = None,
        discover: Callable[[], None] | None = None,
    ) -> None:
        self.kind, self.plural, self.group = kind, plural, group
        self.adopt, self.discover = adopt, discover
        self.entries: dict[str, T] = {}
        self.plugins_loaded = False

    def add(self, name: str, entry: T, *, stacklevel: int = 3) -> None:
        """Register ``entry``; another entry under a taken name wins, with a warning (the
        same one again, as when a module is imported twice, is silent)."""
        if name in self.entries and self.entries[name] != entry:
            warnings.warn(
                f"{self.kind} {name!r} re-registered; the later one wins", stacklevel=stacklevel
            )
        self.entries[name] = entry

    def load_plugins(self) -> None:
        """Discover the built-ins, then load every entry point of the group; once (on the
        first miss or listing)."""
        if self.plugins_loaded:
            return
        self.plugins_loaded = True
        if self.discover is not None:
            self.discover()
        for ep in importlib.metadata.entry_points(group=self.group) if self.group else ():
            try:
                obj = ep.load()
            except Exception as err:  # any error of a broken plug-in: warn, keep the rest
                warnings.warn(f"could not load {self.kind} entry point {ep.name!r}: {err}")
                continue
            if ep.name not in self.entries and self.adopt is not None:
                self.adopt(ep, obj)

    def get(self, name: str) -> T:
        """The entry; an unknown name raises ValueError listing the valid ones."""
        if name not in self.entries:
            self.load_plugins()
        try:
            return self.entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.plural}: "
                             f"{', '.join(self.names())}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names (plug-ins included) matching the fnmatch ``pattern``, sorted."""
        self.load_plugins()
        return sorted(n for n in self.entries if fnmatch.fnmatch(n, pattern))


# -- attention variants ---------------------------------------------------------------------

ENTRY_POINT_GROUP = "ablate.variants"


@dataclass(frozen=True)
class AttentionEntry:
    """A registered attention function and what the harness needs to know about it;
    ``accepts_bias``, read from the signature: ``fn`` declares a ``bias`` keyword."""

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
            raise ValueError(f"variant {self.name!r} has no parameter "
                             f"{', '.join(map(repr, unknown))}; its parameters: "
                             f"{', '.join(self.params) or 'none'}")
        return {**self.params, **{k: float(v) for k, v in overrides.items()}}


def _takes_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` names ``name`` as a keyword (a bare ``**kwargs`` would swallow a bias)."""
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):  # no retrievable signature (e.g. a C builtin)
        return False
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return param is not None and param.kind in kinds


def _adopt_variant(ep: Any, fn: Any) -> None:
    """A plain function as an entry point: registered under the entry point's name."""
    params = getattr(fn, "ablate_params", None)
    register_attention(ep.name, params=params, _source=f"entry point {ep.value}")(fn)


VARIANTS: Registry[AttentionEntry] = Registry(
    "attention variant", "variants", ENTRY_POINT_GROUP, _adopt_variant
)
_REGISTRY = VARIANTS.entries  # the same dict, under its old name


def register_attention(
    name: str | None = None, *, params: Mapping[str, float | None] | None = None,
    description: str | None = None, _source: str | None = None,
) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator that registers an attention function as ``--variant name`` (default: its
    __name__). ``params``: the variant's parameters and defaults, e.g. ``{"alpha": 1.0}``:
    buffers on every attention module, which a schedule can change; ``description``: one
    line for ``ablate variants`` (default: the docstring's first line).
    """

    def decorator(fn: AttentionFn) -> AttentionFn:
        line = description or ((inspect.getdoc(fn) or "").strip().splitlines() or [""])[0]
        module = getattr(fn, "__module__", "") or ""
        source = _source or ("builtin" if module.startswith("variants.") else module)
        key = name or fn.__name__
        VARIANTS.add(key, AttentionEntry(key, fn, line, dict(params or {}), source))
        return fn

    return decorator


def get_attention(name: str) -> AttentionEntry:
    """Look up a variant by name; unknown names raise ValueError listing the valid ones."""
    return VARIANTS.get(name)


def list_attention(pattern: str = "*") -> list[AttentionEntry]:
    """All registered variants whose name matches the fnmatch ``pattern``, sorted by name."""
    return [VARIANTS.entries[n] for n in VARIANTS.names(pattern)]


def load_variant_file(path: str | Path) -> list[str]:
    """Import a user's Python file so that its ``@register_attention`` functions register;
    returns the names it added."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"variant file {str(path)!r} does not exist")
    before = set(VARIANTS.entries)
    module_name = f"ablate_user_variants_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"variant file {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    added = sorted(set(VARIANTS.entries) - before)
    for name in added:
        VARIANTS.entries[name] = replace(VARIANTS.entries[name], source=f"file {path}")
    return added


# -- the parsed --variant ----------------------------------------------------------------


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
    """

    name: str = "softmax"
    params: Mapping[str, float] = field(default_factory=dict)  # overrides of the defaults
    learned: LearnedAlpha | None = None  # alpha=learned: a trainable alpha, not in params

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
        name, _, rest = text.partition(":")
        params: dict[str, float] = {}
        learned: dict[str, str] = {}  # alpha=learned and its options
        for item in split_items(rest):
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq:
                raise ValueError(f"variant parameters must look like key=value, got {item!r} in "
                                 f"{text!r}")
            if key in LEARNED_KEYS or (key == "alpha" and value == "learned"):
                learned[key] = value
            else:
                params[key] = number(key, value)
        return cls(name.strip(), params, LearnedAlpha.from_items(learned, text))

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
