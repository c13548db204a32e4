"""The checks of a study file's run-config values, before any trial starts.

Every ``base`` value, grid value, exclusion and search-space bound goes through
:func:`ablate.config.config_from_mapping` (the keys of ``ablate run``) and
:func:`ablate.trial.resolve.check` (variant, model and data set names, looked up exactly as a
trial looks them up); each grid cell is checked whole, with the combination rules (a
schedule needs an ``alpha`` parameter, the model's task is the data's). Errors are one line
prefixed with the file and the key path.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Any, Mapping

from ablate.config import RunConfig, config_from_mapping
from ablate.exceptions import ConfigError
from ablate.study.schema import ParamSpec, StudyFile

__all__ = [
    "check_config", "check_base", "load_variant_files", "check_grid", "expand_grid",
    "check_search_space", "check_sampler", "check_budget",
]  # fmt: skip

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
        raise ConfigError(
            f"{source}: {section}.{key}: not allowed in a study; {_STUDY_OWNED_KEYS[name]}"
        )
    return name


def check_config(
    values: Mapping[str, Any], where: str, *, combinations: bool = False
) -> RunConfig:
    """config_from_mapping plus :func:`ablate.trial.resolve.check`, errors prefixed with ``where``.

    Args:
        combinations: the values are a whole trial's (a grid cell): check that the names
            fit together too, not only that each exists.
    """
    from ablate.trial.resolve import check

    try:
        cfg = config_from_mapping(values, source=where)
        check(cfg, combinations=combinations)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(
            message if message.startswith(where) else f"{where}: {message}"
        ) from None
    return cfg


def check_base(spec: StudyFile, source: str) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for key, value in spec.base.items():
        base[_config_key(key, "base", source)] = value
    cfg = check_config(base, f"{source}: base")
    # Keep the coerced values (``lr: 1e-4`` arrives from YAML as a string).
    return {k: getattr(cfg, k) for k in base}


def load_variant_files(spec: StudyFile, base: dict[str, Any], source: str) -> tuple[str, ...]:
    """Register user variants first, so that their names validate."""
    from ablate.trial.resolve import load_variant_file_once

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
        raise ConfigError(
            f"{source}: grid: is empty; give run-config keys with lists of values, "
            "e.g. seed: [0, 1, 2]"
        )
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
                raise ConfigError(
                    f"{source}: grid.{key}[{i}]: {value!r} is listed twice; every cell must be "
                    "distinct"
                )
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
            raise ConfigError(
                f"{where}: is empty; give grid keys and values, "
                "e.g. {variant: softmax, apply_to: seqpool}"
            )
        wanted: dict[str, Any] = {}
        for key, value in rule.items():
            name = _norm(key)
            if name not in grid:
                raise ConfigError(f"{where}.{key}: not a grid key; grid keys: {', '.join(grid)}")
            # Compare in the grid's coerced form (``1e-3`` may arrive as a string).
            coerced = getattr(check_config({name: value}, f"{where}.{key}"), name)
            if coerced not in grid[name]:
                raise ConfigError(
                    f"{where}.{key}: {value!r} is not one of the grid values {grid[name]}"
                )
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
        raise ConfigError(
            f"{source}: search_space: is empty; give run-config keys with a type and range"
        )
    space: dict[str, ParamSpec] = {}
    for key, param in spec.search_space.items():
        name = _config_key(key, "search_space", source)
        where = f"{source}: search_space.{key}"
        if name in grid:
            raise ConfigError(
                f"{where}: is also a grid key; a key is either crossed (grid) or sampled"
            )
        hint = _CONFIG_TYPES[name]
        kinds = set(typing.get_args(hint)) or {hint}
        if param.type != "categorical":
            if param.type == "int" and int not in kinds:
                raise ConfigError(
                    f"{where}: {name} is not an integer setting; use categorical choices"
                )
            if param.type != "int" and float not in kinds:
                kind = (
                    "an integer setting; use type int"
                    if int in kinds
                    else "not a numeric setting; use categorical choices"
                )
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
        raise ConfigError(
            f"{source}: nothing to run; give a grid (crossed completely) and/or a search_space "
            "(sampled)"
        )
    sampler = spec.sampler or ("tpe" if space else "grid")
    if sampler == "grid" and space:
        raise ConfigError(
            f"{source}: sampler: 'grid' cannot sample search_space; use tpe or random "
            "(or move the values into the grid)"
        )
    if sampler != "grid" and not space:
        raise ConfigError(
            f"{source}: sampler: {sampler!r} needs a search_space to sample; a grid alone is "
            "always run cell by cell (sampler: grid)"
        )
    return sampler


def check_budget(spec: StudyFile, cells: list[Any], source: str) -> None:
    if cells and spec.n_trials is not None:
        raise ConfigError(
            f"{source}: n_trials: a grid study runs each of its {len(cells)} cells once; remove "
            "n_trials (use --trials N to run only N trials now)"
        )
