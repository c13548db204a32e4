"""Study files: YAML -> validated :class:`StudyPlan` -> the trials (grid cells) it stands for.

A study file declares an ablation, and everything in it is checked before any trial starts:
its own keys by :mod:`~ablate.study.schema` (pydantic), the run-config values here: every
``base`` value, grid value, exclusion and search-space bound goes through
:func:`ablate.config.config_from_mapping` and :func:`ablate.trial.run.check`, as a
trial's would, and each grid cell is checked whole (a schedule needs an ``alpha`` parameter,
the model's task is the data's). Errors are one line naming the file, the key path and
what was expected, e.g.
``studies/x.yaml: grid.variant[2]: unknown attention variant 'sofmax'; valid variants: ...``.

Example::

    name: quick
    base: {dataset: digits, epochs: 6}
    grid:
      variant: [softmax, softmax_v]
      seed: [0, 1, 2]
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from ablate.config import RunConfig, config_from_mapping
from ablate.exceptions import ConfigError
from ablate.study.common import MAX_CELLS, one_line
from ablate.study.schema import ParamSpec, StudyFile, format_validation_error
from ablate.tracking import conventions as cv

__all__ = ["Cell", "StudyPlan", "load_study", "apply_overrides", "parse_study"]


# -- the resolved plan ------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One grid cell: the grid keys' values for one trial."""

    index: int
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """Canonical identity stored with the trial (stable when the grid is reordered)."""
        return json.dumps(self.params, sort_keys=True)

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())


@dataclass
class StudyPlan:
    """A validated study file, with its grid expanded into cells."""

    path: str  # the study file (for messages)
    text: str  # the file's content (logged to the study's MLflow parent run)
    spec: StudyFile
    base: dict[str, Any]  # the base run-config values, keys normalised to underscores
    grid: dict[str, list[Any]]
    # in run order: seeds vary slowest, so a study stopped halfway has every variant at the
    # same number of seeds; empty for a pure search
    cells: list[Cell]
    search_space: dict[str, ParamSpec]
    sampler: str  # grid (cells only), tpe or random (for search_space)
    direction: str
    variant_files: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # the command line's edits (load_study)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def experiment(self) -> str:
        return self.spec.experiment or self.spec.name

    @property
    def metric(self) -> str:
        return self.spec.metric

    @property
    def is_grid(self) -> bool:
        return bool(self.cells)

    @property
    def total_trials(self) -> int | None:
        """Trials that make the study complete: one per cell, or ``n_trials`` sampled ones."""
        return len(self.cells) if self.cells else self.spec.n_trials

    def config_values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """base < trial parameters (grid cell and sampled values)."""
        return {**self.base, **params}

    def trial_config(self, params: Mapping[str, Any], **run: Any) -> RunConfig:
        """The RunConfig of one trial; ``run`` sets study-owned keys (experiment, run_name...)."""
        values = {**self.config_values(params), **run}
        return config_from_mapping(values, source=f"{self.path}: trial")

    def resume_command(self, storage_url: str) -> str:
        """The command that continues this study (what a one-line error suggests)."""
        import shlex

        from ablate.study.storage import display_url

        storage = display_url(storage_url)
        return shlex.join(["ablate", "study", self.path, *self.overrides, "--storage", storage])

    def group_keys(self) -> list[str]:
        """Columns of the summary table: the variant and every grid key except the seed."""
        return ["variant"] + [k for k in self.grid if k not in ("variant", "seed")]


def load_study(
    path: str | Path, overrides: Sequence[str] = (), *, confirm_large: bool = False
) -> StudyPlan:
    """Read, validate and expand a study file; raises ConfigError (one line) when it is bad.
    ``overrides``: Hydra-style edits applied before validation (``base.epochs=2``,
    ``grid.seed=[0,1]``, ``~grid.lr``); ``confirm_large``: accept more than MAX_CELLS cells."""
    import yaml

    from ablate.config import load_yaml

    data = load_yaml(path, kind="study file", keys="study keys (name, base, grid, ...)")
    text = Path(path).read_text()
    source = str(path)
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{path} (with {one_line(' '.join(overrides), 100)})"
        text = f"# {path} with {' '.join(overrides)}\n" + yaml.safe_dump(data, sort_keys=False)
    plan = parse_study(data, source=source, text=text, confirm_large=confirm_large)
    plan.path, plan.overrides = str(path), tuple(overrides)
    return plan


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key.path=value`` (``+key.path=value`` too) sets a value, ``~key.path`` removes it."""
    import yaml

    data = copy.deepcopy(data)
    for item in overrides:
        key, eq, value = item.partition("=")
        remove = key.startswith("~")
        path = key.lstrip("+~").split(".")
        if not all(path) or remove == bool(eq):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. base.epochs=2, "
                              "grid.seed=[0,1]) or ~KEY to remove a key")  # fmt: skip
        if path[0] not in StudyFile.model_fields:
            raise ConfigError(f"override {item!r}: unknown key {path[0]!r}; valid keys: "
                              + ", ".join(StudyFile.model_fields))  # fmt: skip
        node = data
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(path[: depth + 1])} is not a "
                                  "mapping")  # fmt: skip
        if remove:
            node.pop(path[-1], None)
            continue
        try:
            node[path[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ConfigError(f"override {item!r}: not a YAML value ({problem})") from None
    return data


def parse_study(data: Any, source: str = "study", text: str = "",
                confirm_large: bool = False) -> StudyPlan:  # fmt: skip
    """Validate a study mapping (already parsed YAML); ``source`` names it in errors."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(f"{source}: expected a mapping of study keys (name, base, grid, ...), "
                          f"got {got}")  # fmt: skip
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None

    size = math.prod(len(v) for v in (spec.grid or {}).values())
    if size > MAX_CELLS and not confirm_large:  # sized before anything is expanded
        sizes = " x ".join(str(len(v)) for v in (spec.grid or {}).values())
        raise ConfigError(f"{source}: grid: {sizes} = {size:,} cells, more than {MAX_CELLS:,}; "
                          "shrink it (e.g. the override grid.seed=[0,1]) or confirm with --yes")
    base = check_base(spec, source)
    variant_files = load_variant_files(spec, base, source)
    grid = check_grid(spec, base, source)
    cells = [Cell(i, c) for i, c in enumerate(expand_grid(spec, grid, source))]
    space = check_search_space(spec, base, grid, source)
    for cell in cells:  # cross-field rules (alpha_steps vs alpha_epochs, model vs data) per cell
        where = f"{source}: grid cell {cell.describe()}"
        check_config({**base, **cell.params}, where, combinations=True)
    sampler = check_sampler(spec, grid, space, source)
    check_budget(spec, cells, source)
    direction = spec.direction or ("minimize" if spec.metric == cv.VAL_LOSS else "maximize")
    return StudyPlan(path=source, text=text, spec=spec, base=base, grid=grid, cells=cells,
                     search_space=space, sampler=sampler, direction=direction,
                     variant_files=variant_files)  # fmt: skip


# -- the run-config values of a study file -----------------------------------------------------
# Run-config keys a study sets itself: one experiment per study, one run name per trial.
_STUDY_OWNED_KEYS = {
    "experiment": "set the study's MLflow experiment with the top-level 'experiment' key",
    "run_name": "every trial gets its own run name",
}
_CONFIG_TYPES = typing.get_type_hints(RunConfig)
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def _norm(key: Any) -> str:
    return str(key).replace("-", "_")


def _config_key(key: Any, section: str, source: str) -> str:
    """A ``base`` / ``grid`` / ``search_space`` key: a run-config key the study leaves open."""
    import difflib

    name = _norm(key)
    if name not in _CONFIG_FIELDS:
        close = difflib.get_close_matches(name, _CONFIG_FIELDS, n=3)
        hint = (f"; did you mean {', '.join(close)}?" if close
                else " (keys are those of `ablate run`, see `ablate run --help`)")
        raise ConfigError(f"{source}: {section}: unknown run-config key {key!r}{hint}")
    if name in _STUDY_OWNED_KEYS:
        raise ConfigError(f"{source}: {section}.{key}: not allowed in a study; "
                          f"{_STUDY_OWNED_KEYS[name]}")  # fmt: skip
    return name


def check_config(values: Mapping[str, Any], where: str, *, combinations: bool = False
                 ) -> RunConfig:  # fmt: skip
    """config_from_mapping plus :func:`ablate.trial.run.check`, errors prefixed with ``where``;
    ``combinations``: the values are a whole trial's (a grid cell), so the names must fit
    together too."""
    from ablate.trial.run import check

    try:
        cfg = config_from_mapping(values, source=where)
        check(cfg, combinations=combinations)
    except ConfigError as err:
        message = str(err) if str(err).startswith(where) else f"{where}: {err}"
        raise ConfigError(message) from None
    return cfg


def check_base(spec: StudyFile, source: str) -> dict[str, Any]:
    base = {_config_key(key, "base", source): value for key, value in spec.base.items()}
    cfg = check_config(base, f"{source}: base")
    # Keep the coerced values (``lr: 1e-4`` arrives from YAML as a string).
    return {k: getattr(cfg, k) for k in base}


def load_variant_files(spec: StudyFile, base: dict[str, Any], source: str) -> tuple[str, ...]:
    """Register user variants first, so that their names validate."""
    from variants import load_variant_file_once

    files = [base["variant_file"]] if base.get("variant_file") else []
    for key, values in (spec.grid or {}).items():
        if _norm(key) == "variant_file":
            files += [v for v in values if isinstance(v, str)]
    for path in files:
        try:
            load_variant_file_once(path)
        except ValueError as err:
            raise ConfigError(f"{source}: variant_file: {err}") from None
    return tuple(files)


def check_grid(spec: StudyFile, base: dict[str, Any], source: str) -> dict[str, list[Any]]:
    if spec.grid is None:
        return {}
    if not spec.grid:
        raise ConfigError(f"{source}: grid: is empty; give run-config keys with lists of values, "
                          "e.g. seed: [0, 1, 2]")  # fmt: skip
    grid: dict[str, list[Any]] = {}
    for key, values in spec.grid.items():
        name = _config_key(key, "grid", source)
        if name in grid:
            raise ConfigError(f"{source}: grid.{key}: given twice (as {name!r} and {key!r})")
        coerced: list[Any] = []
        for i, value in enumerate(values):
            cfg = check_config({**base, name: value}, f"{source}: grid.{key}[{i}]")
            value = getattr(cfg, name)
            if value in coerced:
                raise ConfigError(f"{source}: grid.{key}[{i}]: {value!r} is listed twice; every "
                                  "cell must be distinct")  # fmt: skip
            coerced.append(value)
        grid[name] = coerced
    return grid


def expand_grid(
    spec: StudyFile, grid: dict[str, list[Any]], source: str
) -> list[dict[str, Any]]:
    """The grid crossed completely, seeds slowest, minus the ``exclude`` rules."""
    if not grid:
        if spec.exclude:
            raise ConfigError(f"{source}: exclude: needs a grid to exclude cells from")
        return []
    # Seeds vary slowest: a study cut short still has every variant at the same seeds.
    order = [k for k in grid if k == "seed"] + [k for k in grid if k != "seed"]
    combos = [dict(zip(order, values)) for values in itertools.product(*(grid[k] for k in order))]
    combos = [{k: c[k] for k in grid} for c in combos]  # report keys in the file's order
    for i, rule in enumerate(spec.exclude or []):
        where = f"{source}: exclude[{i}]"
        if not rule:
            raise ConfigError(f"{where}: is empty; give grid keys and values, "
                              "e.g. {variant: softmax, apply_to: seqpool}")  # fmt: skip
        wanted: dict[str, Any] = {}
        for key, value in rule.items():
            name = _norm(key)
            if name not in grid:
                raise ConfigError(f"{where}.{key}: not a grid key; grid keys: {', '.join(grid)}")
            # Compare in the grid's coerced form (``1e-3`` may arrive as a string).
            coerced = getattr(check_config({name: value}, f"{where}.{key}"), name)
            if coerced not in grid[name]:
                raise ConfigError(f"{where}.{key}: {value!r} is not one of the grid values "
                                  f"{grid[name]}")  # fmt: skip
            wanted[name] = coerced
        before = len(combos)
        combos = [c for c in combos if any(c[k] != v for k, v in wanted.items())]
        if len(combos) == before:
            raise ConfigError(f"{where}: matches no grid cell (or only cells already excluded)")
    if not combos:
        raise ConfigError(f"{source}: exclude: removes every grid cell; nothing would run")
    return combos


def check_search_space(
    spec: StudyFile, base: dict[str, Any], grid: dict[str, list[Any]], source: str
) -> dict[str, ParamSpec]:
    if spec.search_space is None:
        return {}
    if not spec.search_space:
        raise ConfigError(f"{source}: search_space: is empty; give run-config keys with a type "
                          "and range")  # fmt: skip
    space: dict[str, ParamSpec] = {}
    for key, param in spec.search_space.items():
        name = _config_key(key, "search_space", source)
        where = f"{source}: search_space.{key}"
        if name in grid:
            raise ConfigError(f"{where}: is also a grid key; a key is either crossed (grid) or "
                              "sampled")  # fmt: skip
        hint = _CONFIG_TYPES[name]
        kinds = set(typing.get_args(hint)) or {hint}
        if param.type != "categorical":
            if param.type == "int" and int not in kinds:
                raise ConfigError(f"{where}: {name} is not an integer setting; use categorical "
                                  "choices")  # fmt: skip
            if param.type != "int" and float not in kinds:
                kind = ("an integer setting; use type int" if int in kinds
                        else "not a numeric setting; use categorical choices")  # fmt: skip
                raise ConfigError(f"{where}: {name} is {kind}")
            values = [param.low, param.high]
            if param.type == "int":
                values = [int(v) for v in values]
        else:
            values = list(param.choices or [])
        coerced = []
        for i, value in enumerate(values):
            label = f"{where}.choices[{i}]" if param.type == "categorical" else where
            coerced.append(getattr(check_config({**base, name: value}, label), name))
        if param.type == "categorical":
            if len(set(map(repr, coerced))) != len(coerced):
                raise ConfigError(f"{where}.choices: lists a value twice")
            param = param.model_copy(update={"choices": coerced})
        space[name] = param
    return space


def check_sampler(spec: StudyFile, grid: dict, space: dict, source: str) -> str:
    if not grid and not space:
        raise ConfigError(f"{source}: nothing to run; give a grid (crossed completely) and/or a "
                          "search_space (sampled)")  # fmt: skip
    sampler = spec.sampler or ("tpe" if space else "grid")
    if sampler == "grid" and space:
        raise ConfigError(f"{source}: sampler: 'grid' cannot sample search_space; use tpe or "
                          "random (or move the values into the grid)")  # fmt: skip
    if sampler != "grid" and not space:
        raise ConfigError(f"{source}: sampler: {sampler!r} needs a search_space to sample; a grid "
                          "alone is always run cell by cell (sampler: grid)")  # fmt: skip
    return sampler


def check_budget(spec: StudyFile, cells: list[Any], source: str) -> None:
    if cells and spec.n_trials is not None:
        raise ConfigError(f"{source}: n_trials: a grid study runs each of its {len(cells)} cells "
                          "once; remove n_trials (use --trials N to run only N trials now)")
