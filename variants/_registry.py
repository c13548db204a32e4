"""The registries of what a user plugs in: attention variants and the alpha schedules that move
a variant's ``alpha`` during training, with the generic :class:`Registry` every ablate
registry uses.

One class holds the machinery that the variants, the alpha schedules and the backbones
(``ablate.models``) share: a warning when a name is registered
again with something else, fnmatch listing, plug-ins from an entry-point group, and lookup
errors that list the valid names. It lives here because ``variants`` is the bottom layer
(pure torch and the standard library).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import inspect
import math
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar

from variants._base import AttentionFn
from variants._learned import LEARNED_KEYS, LearnedAlpha, number, split_items

__all__ = [
    "Registry", "AttentionEntry", "VariantSpec", "VARIANTS", "register_attention",
    "get_attention", "list_attention", "load_variant_file", "load_variant_file_once",
    "parse_variant", "ENTRY_POINT_GROUP",
    "AlphaSchedule", "SCHEDULES", "SCHEDULE_ENTRY_POINT_GROUP", "ScheduleShape",
    "register_schedule", "get_schedule", "list_schedules",
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


# variant file (resolved path) -> modification time when it was loaded
_LOADED_FILES: dict[str, int] = {}


def load_variant_file_once(path: str) -> None:
    """:func:`load_variant_file` unless this version of the file is registered already (a
    study checks many configurations naming the same file; re-importing re-registers each).

    The file is imported in a child interpreter first: one that ends the interpreter
    (``sys.exit`` or ``os._exit`` at import) or fails would otherwise end the caller silently,
    or with its traceback; both become one ValueError line here.
    """
    import os
    import subprocess

    key = os.path.realpath(path)
    mtime = os.stat(key).st_mtime_ns if os.path.isfile(key) else -1
    if _LOADED_FILES.get(key) == mtime:
        return
    if mtime != -1:
        done = "variant file imported"
        code = f"import sys, variants; variants.load_variant_file(sys.argv[1]); print({done!r})"
        probe = subprocess.run(
            [sys.executable, "-c", code, path], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        if done not in probe.stdout:
            lines = probe.stderr.strip().splitlines()
            why = (
                f"fails on import: {lines[-1]}" if "Traceback" in probe.stderr and lines
                else f"ends the Python interpreter on import (exit status {probe.returncode}: "
                "sys.exit or os._exit at module level; move that code under "
                "`if __name__ == '__main__':`)"
            )
            raise ValueError(f"variant file {path!r} {why}")
    load_variant_file(path)
    _LOADED_FILES[key] = mtime


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


# -- alpha schedules ---------------------------------------------------------------------
# Alpha schedules: the value of a variant parameter at every optimizer step.
#
# The training loop calls ``schedule(step)`` before optimizer step ``step`` (0, 1, 2, ...).
# Convention: a schedule of ``steps`` steps anneals over the window ``0 .. steps - 1``: step 0
# trains at ``start`` and the LAST step of the window, ``steps - 1``, trains at ``end``. So
# ``steps`` = the run's total optimizer steps means the final optimizer step trains at
# ``end``, and ``steps = k * steps_per_epoch`` means alpha reaches ``end`` on the last step of
# epoch k. A one-step window is at ``end`` from step 0.
#
# After the window, ``hold=True`` keeps ``end``; ``hold=False`` repeats the window (a
# sawtooth of period ``steps``: each cycle reaches ``end`` on its last step, the next step
# starts again at ``start``).
#
# Shapes of the built-ins, with p = step / (steps - 1), clipped to [0, 1]:
#
# - ``constant``: ``end`` throughout; ``start`` is ignored (the value the run is "about").
# - ``linear``: start + (end - start) * p
# - ``cosine``: start + (end - start) * (1 - cos(pi p)) / 2   (slow, fast, slow)
# - ``step``: ``levels`` equal jumps, i.e. levels + 1 plateaus start, ..., end, each held for
#   the same number of steps (steps / (levels + 1), give or take one), the last included.
#
# A new shape is one decorated function ``shape(p, levels) -> fraction of the way from start to
# end`` (it should return 1 at p = 1 so that the window ends at ``end``), in any module that is
# imported, or in another package through the ``ablate.schedules`` entry-point group
# (``my_shape = my_pkg.schedules:my_shape``); ``list_schedules()`` lists them all.
SCHEDULE_ENTRY_POINT_GROUP = "ablate.schedules"

# shape(p, levels) -> fraction of the way from start to end, p in [0, 1]
ScheduleShape = Callable[[float, int], float]


def _adopt(ep: Any, fn: ScheduleShape) -> None:
    register_schedule(ep.name)(fn)  # a plain function, under its entry point's name


SCHEDULES: Registry[ScheduleShape] = Registry(
    "alpha schedule", "schedules", SCHEDULE_ENTRY_POINT_GROUP, _adopt
)


def register_schedule(name: str | None = None) -> Callable[[ScheduleShape], ScheduleShape]:
    """Decorator that registers a shape as ``--alpha-schedule name`` (default: its __name__)."""

    def decorator(fn: ScheduleShape) -> ScheduleShape:
        SCHEDULES.add(name or fn.__name__, fn)
        return fn

    return decorator


def list_schedules(pattern: str = "*") -> list[str]:
    """Names of all registered schedules (entry points included) matching ``pattern``, sorted."""
    return SCHEDULES.names(pattern)


def get_schedule(name: str) -> ScheduleShape:
    """The shape registered as ``name``; unknown names raise ValueError listing the valid ones."""
    return SCHEDULES.get(name)


@register_schedule("constant")
def _constant(p: float, levels: int) -> float:
    return 1.0


@register_schedule("linear")
def _linear(p: float, levels: int) -> float:
    return p


@register_schedule("cosine")
def _cosine(p: float, levels: int) -> float:
    return (1.0 - math.cos(math.pi * p)) / 2.0


@register_schedule("step")
def _step(p: float, levels: int) -> float:
    # levels + 1 plateaus over p in [0, 1]: plateau i covers p in [i, i+1) / (levels + 1),
    # and p = 1 (the window's last step) belongs to the last one. With p = step / (steps - 1)
    # every plateau gets the same number of steps, give or take one.
    # (The 1e-9 keeps a boundary that is an exact integer in reals from rounding down.)
    return min(math.floor(p * (levels + 1) + 1e-9), levels) / levels


@dataclass(frozen=True)
class AlphaSchedule:
    """``schedule(step) -> alpha`` before optimizer step ``step`` (see the comment above).

    Built once per run (by :func:`ablate.trial.run.resolve`), before the data is loaded: a
    window given in epochs (``epochs``) becomes steps with :meth:`sized` once the number of
    optimizer steps per epoch is known. The shape function is looked up once, here.

    Args:
        kind: a registered schedule name (``list_schedules()``).
        start: alpha at step 0 (ignored by ``constant``).
        end: alpha at step ``steps - 1`` and, with ``hold``, after it.
        steps: length of the annealing window in optimizer steps (>= 1); None when the
            window is given in ``epochs``.
        levels: number of equal jumps of the ``step`` schedule (>= 1).
        hold: keep ``end`` after the window; False repeats the window (sawtooth).
        epochs: the window in epochs (``steps`` None): ``sized(n)`` makes it
            ``max(1, round(epochs * n))`` steps.
    """

    kind: str
    start: float
    end: float
    steps: int | None
    levels: int = 4
    hold: bool = True
    epochs: float | None = None
    shape: ScheduleShape = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # unknown names raise, listing the valid ones
        object.__setattr__(self, "shape", get_schedule(self.kind))
        if self.steps is None and self.epochs is None:
            raise ValueError("alpha schedule needs a window: steps or epochs")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"alpha schedule needs at least 1 step, got {self.steps}")
        if self.levels < 1:
            raise ValueError(f"alpha_levels must be >= 1, got {self.levels}")

    def sized(self, steps_per_epoch: int) -> "AlphaSchedule":
        """This schedule with its window in optimizer steps (itself when already in steps)."""
        if self.steps is not None:
            return self
        steps = max(1, round(self.epochs * steps_per_epoch))  # type: ignore[operator]
        return replace(self, steps=steps, epochs=None)

    def __call__(self, step: int) -> float:
        if self.steps is None:
            raise ValueError("this alpha schedule's window is in epochs; call sized() first")
        step = max(step, 0)
        if not self.hold:
            step %= self.steps
        p = 1.0 if self.steps == 1 else min(step / (self.steps - 1), 1.0)
        f = self.shape(p, self.levels)
        # Interpolated this way both ends are exact: f = 0 gives start, f = 1 gives end.
        return self.start * (1.0 - f) + self.end * f

    # The shape is a function (maybe from a user's file): pickle the name, look it up again.
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "shape"}

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "shape", get_schedule(self.kind))
