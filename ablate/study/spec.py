"""Study files: YAML -> validated :class:`StudyPlan` -> the trials (grid cells) it stands for.

A study file declares an ablation. Everything in it is checked before any trial starts:
the file's own keys (pydantic, unknown keys are errors), the ``base`` run config and
every grid value and search-space bound (through :func:`ablate.config.config_from_mapping`,
so the keys are exactly those of ``ablate run``), variant strings against the variant
registry, model names against the model registry and data set names. Errors are one line
naming the file, the key path and what was expected, e.g.
``studies/x.yaml: grid.variant[2]: unknown attention variant 'sofmax'; valid variants: ...``.

Example::

    name: quick
    base: {dataset: digits, epochs: 6}
    grid:
      variant: [softmax, softmax_v]
      seed: [0, 1, 2]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ablate.config import RunConfig, config_from_mapping
from ablate.exceptions import ConfigError

__all__ = [
    "METRICS",
    "ParamSpec",
    "PrunerSpec",
    "StudyFile",
    "Cell",
    "StudyPlan",
    "load_study",
    "parse_study",
]

# Validation metrics the objective can follow (reported by ``train`` at every epoch).
METRICS = ("val_acc", "val_loss", "val_f1", "val_precision", "val_recall")
# Run-config keys a study sets itself: one experiment per study, one run name per trial.
_STUDY_OWNED_KEYS = {
    "experiment": "set the study's MLflow experiment with the top-level 'experiment' key",
    "run_name": "every trial gets its own run name",
}
_CONFIG_TYPES = typing.get_type_hints(RunConfig)
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


# -- scalar helpers used by the schema ------------------------------------------------------
def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"expected a string, number, boolean or null, got {value!r}")


def _number(value: Any) -> float:
    # YAML 1.1 reads ``1e-4`` (no dot) as a string; accept it, but never a boolean.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


Scalar = Annotated[Any, BeforeValidator(_scalar)]
Number = Annotated[float, BeforeValidator(_number)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]


class ParamSpec(BaseModel):
    """One search-space dimension: ``{type: log_float, low: 1e-4, high: 1e-2}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["categorical", "int", "float", "log_float"]
    choices: Annotated[list[Scalar], Field(min_length=1)] | None = None
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None

    @model_validator(mode="after")
    def _check(self) -> "ParamSpec":
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("a categorical parameter needs 'choices' (a non-empty list)")
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
            if extra:
                raise ValueError(
                    f"a categorical parameter takes only 'choices', not {', '.join(extra)}"
                )
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs both 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(
                f"'low' must be smaller than 'high', got low={self.low:g} high={self.high:g}"
            )
        if self.type == "int":
            for key in ("low", "high", "step"):
                value = getattr(self, key)
                if value is not None and value != int(value):
                    raise ValueError(f"an int parameter needs an integer '{key}', got {value:g}")
        if self.type == "log_float":
            if self.low <= 0:
                raise ValueError(f"a log_float parameter needs low > 0, got {self.low:g}")
            if self.step is not None:
                raise ValueError("a log_float parameter cannot have a 'step'")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"'step' must be positive, got {self.step:g}")
        return self

    def describe(self) -> str:
        """``log_float[0.0001, 0.01]`` / ``categorical[a, b]`` for listings."""
        if self.type == "categorical":
            return f"categorical[{', '.join(map(str, self.choices or []))}]"
        step = f", step {self.step:g}" if self.step is not None else ""
        return f"{self.type}[{self.low:g}, {self.high:g}{step}]"


_MEDIAN_OPTIONS = ("n_startup_trials", "n_warmup_steps", "interval_steps")
_HYPERBAND_OPTIONS = ("min_resource", "max_resource", "reduction_factor")


class PrunerSpec(BaseModel):
    """``pruner: median`` or ``pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 10}``.

    Steps are epochs. Epoch 0 (the untrained model) is reported but never pruned on.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["none", "median", "hyperband"] = "none"
    n_startup_trials: NonNegativeInt | None = None
    n_warmup_steps: NonNegativeInt | None = None
    interval_steps: PositiveInt | None = None
    min_resource: PositiveInt | None = None
    max_resource: PositiveInt | None = None
    reduction_factor: Annotated[int, Field(strict=True, ge=2)] | None = None

    @model_validator(mode="after")
    def _check(self) -> "PrunerSpec":
        allowed = {"none": (), "median": _MEDIAN_OPTIONS, "hyperband": _HYPERBAND_OPTIONS}[
            self.type
        ]
        wrong = [
            k
            for k in _MEDIAN_OPTIONS + _HYPERBAND_OPTIONS
            if getattr(self, k) is not None and k not in allowed
        ]
        if wrong:
            valid = ", ".join(allowed) if allowed else "no options"
            raise ValueError(
                f"the {self.type} pruner does not take {', '.join(wrong)} (it takes {valid})"
            )
        return self


def _pruner_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class StudyFile(BaseModel):
    """The keys of a study file (see ``studies/*.yaml``).

    name: the Optuna study name (and the ``study`` tag of every MLflow run).
    description: one line shown as the parent run's note.
    experiment: MLflow experiment (default: the study name).
    base: run-config keys shared by every trial (the keys of ``ablate run --config``).
    grid: run-config key -> list of values; crossed completely, each cell runs once.
    exclude: partial cells to leave out of the grid, e.g. ``[{variant: softmax, apply_to: both}]``.
    search_space: run-config key ->
        ``{type: categorical|int|float|log_float, choices | low, high[, step]}``.
    sampler: grid (default for a grid alone) | tpe (default with a search_space) | random.
    pruner: none (default: complete learning curves) | median | hyperband, or a mapping
        with ``type`` and the pruner's options.
    metric / direction: the validation metric followed (default val_acc; direction
        maximize, minimize for val_loss). objective: best (default) or final epoch value.
    n_trials / timeout: sampled trials in the study / seconds after which no trial starts.
    storage: Optuna storage URL (``--storage`` wins). seed: sampler seed (the training
        seed is ``base.seed`` or a grid key). max_retries: how often a failed cell reruns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, strict=True)]
    description: str | None = None
    experiment: Annotated[str, Field(min_length=1)] | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[Scalar], Field(min_length=1)]] | None = None
    exclude: list[dict[str, Scalar]] | None = None
    search_space: dict[str, ParamSpec] | None = None
    sampler: Literal["grid", "tpe", "random"] | None = None
    pruner: Annotated[PrunerSpec, BeforeValidator(_pruner_shorthand)] = PrunerSpec()
    metric: Literal[METRICS] = "val_acc"  # type: ignore[valid-type]
    direction: Literal["maximize", "minimize"] | None = None
    objective: Literal["best", "final"] = "best"
    n_trials: PositiveInt | None = None
    timeout: Annotated[float, BeforeValidator(_number), Field(gt=0)] | None = None
    storage: Annotated[str, Field(min_length=1)] | None = None
    seed: Annotated[int, Field(strict=True)] | None = None
    max_retries: NonNegativeInt = 2


# Which schema model a key path lands in, to list the valid keys in "unknown key" errors.
def _model_at(loc: tuple) -> type[BaseModel] | None:
    if len(loc) == 1:
        return StudyFile
    if loc[0] == "pruner" and len(loc) == 2:
        return PrunerSpec
    if loc[0] == "search_space" and len(loc) == 3:
        return ParamSpec
    return None


def _loc_text(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format_validation_error(path: str, err: ValidationError) -> str:
    """The first problem, as one line: file, key path, what was expected."""
    first = err.errors(include_url=False)[0]
    loc, kind, msg = tuple(first["loc"]), first["type"], first["msg"]
    where = _loc_text(loc)
    if kind == "extra_forbidden":
        model = _model_at(loc)
        valid = f"; valid keys: {', '.join(model.model_fields)}" if model else ""
        return f"{path}: {where}: unknown key{valid}"
    if kind == "missing":
        return f"{path}: {where}: missing (required)"
    if kind == "too_short":
        return f"{path}: {where}: expected a non-empty list, got []"
    if msg.startswith("Value error, "):
        return f"{path}: {where}: {msg[len('Value error, ') :]}"
    expected = msg.replace("Input should be", "expected", 1)
    return f"{path}: {where}: {expected}, got {first.get('input')!r}"


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
    """A validated study file, with its grid expanded into cells.

    Attributes:
        path: the study file (for messages).
        text: the file's content (logged to the study's MLflow parent run).
        base: the ``base`` run-config values, keys normalised to underscores.
        cells: the grid cells in run order (seeds vary slowest, so a study stopped halfway
            has every variant at the same number of seeds); empty for a pure search.
        sampler: ``grid`` (cells only), ``tpe`` or ``random`` (for ``search_space``).
    """

    path: str
    text: str
    spec: StudyFile
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    cells: list[Cell]
    search_space: dict[str, ParamSpec]
    sampler: str
    direction: str
    variant_files: tuple[str, ...] = field(default_factory=tuple)

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
        return config_from_mapping(
            {**self.config_values(params), **run}, source=f"{self.path}: trial"
        )

    def group_keys(self) -> list[str]:
        """Columns of the summary table: the variant and every grid key except the seed."""
        keys = ["variant"] + [k for k in self.grid if k not in ("variant", "seed")]
        return keys


def load_study(path: str | Path) -> StudyPlan:
    """Read, validate and expand a study file; raises ConfigError (one line) when it is bad."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such study file (studies are YAML files, e.g. studies/quick.yaml)"
        )
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_study(data, source=str(path), text=text)


def parse_study(data: Any, source: str = "study", text: str = "") -> StudyPlan:
    """Validate a study mapping (already parsed YAML); ``source`` names it in errors."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(
            f"{source}: expected a mapping of study keys (name, base, grid, ...), got {got}"
        )
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None

    base = _check_base(spec, source)
    variant_files = _load_variant_files(spec, base, source)
    grid = _check_grid(spec, base, source)
    cells = _expand_cells(spec, grid, source)
    space = _check_search_space(spec, base, grid, source)
    for cell in cells:  # cross-field rules (e.g. alpha_steps vs alpha_epochs) per cell
        _check_config({**base, **cell.params}, f"{source}: grid cell {cell.describe()}")
    sampler = _check_sampler(spec, grid, space, source)
    _check_budget(spec, cells, source)
    direction = spec.direction or ("minimize" if spec.metric == "val_loss" else "maximize")
    return StudyPlan(
        path=source,
        text=text,
        spec=spec,
        base=base,
        grid=grid,
        cells=cells,
        search_space=space,
        sampler=sampler,
        direction=direction,
        variant_files=variant_files,
    )


# -- the checks -------------------------------------------------------------------------------
def _norm(key: Any) -> str:
    return str(key).replace("-", "_")


def _unknown_config_key(key: str, where: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(_norm(key), _CONFIG_FIELDS, n=3)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else " (keys are those of `ablate run`, see `ablate run --help`)"
    )
    return ConfigError(f"{where}: unknown run-config key {key!r}{hint}")


def _check_config(values: Mapping[str, Any], where: str) -> RunConfig:
    """config_from_mapping plus registry checks (variant, model, data set), errors prefixed."""
    try:
        cfg = config_from_mapping(values, source=where)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(
            message if message.startswith(where) else f"{where}: {message}"
        ) from None
    _check_names(cfg, where)
    return cfg


def _check_names(cfg: RunConfig, where: str) -> None:
    import variants
    from ablate.data import dataset_task
    from ablate.models import list_models

    try:
        variants.parse_variant(cfg.variant)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if ":" in cfg.model:  # timm:NAME / hf:NAME_OR_DIR: the model source resolves it
        from ablate.models._registry import model_entry

        try:
            model_entry(cfg.model)
        except ValueError as err:  # ConfigError included
            raise ConfigError(f"{where}: {err}") from None
    elif cfg.model not in list_models(include_aliases=True):
        import difflib

        close = difflib.get_close_matches(cfg.model, list_models(include_aliases=True), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"{where}: unknown model {cfg.model!r}; {hint}see `ablate models`")
    try:
        dataset_task(cfg.dataset)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_base(spec: StudyFile, source: str) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for key, value in spec.base.items():
        name = _norm(key)
        if name in _STUDY_OWNED_KEYS:
            raise ConfigError(
                f"{source}: base.{key}: not allowed in a study; {_STUDY_OWNED_KEYS[name]}"
            )
        if name not in _CONFIG_FIELDS:
            raise _unknown_config_key(key, f"{source}: base")
        base[name] = value
    cfg = _check_config(base, f"{source}: base")
    # Keep the coerced values (``lr: 1e-4`` arrives from YAML as a string).
    return {k: getattr(cfg, k) for k in base}


def _load_variant_files(spec: StudyFile, base: dict[str, Any], source: str) -> tuple[str, ...]:
    """Register user variants first, so that their names validate."""
    import variants

    files = [base["variant_file"]] if base.get("variant_file") else []
    for key, values in (spec.grid or {}).items():
        if _norm(key) == "variant_file":
            files += [v for v in values if isinstance(v, str)]
    for path in files:
        try:
            variants.load_variant_file(path)
        except ValueError as err:
            raise ConfigError(f"{source}: variant_file: {err}") from None
    return tuple(files)


def _check_grid(spec: StudyFile, base: dict[str, Any], source: str) -> dict[str, list[Any]]:
    if spec.grid is None:
        return {}
    if not spec.grid:
        raise ConfigError(
            f"{source}: grid: is empty; give run-config keys with lists of values, "
            "e.g. seed: [0, 1, 2]"
        )
    grid: dict[str, list[Any]] = {}
    for key, values in spec.grid.items():
        name = _norm(key)
        if name not in _CONFIG_FIELDS:
            raise _unknown_config_key(key, f"{source}: grid")
        if name in _STUDY_OWNED_KEYS:
            raise ConfigError(
                f"{source}: grid.{key}: not allowed in a study; {_STUDY_OWNED_KEYS[name]}"
            )
        if name in grid:
            raise ConfigError(f"{source}: grid.{key}: given twice (as {name!r} and {key!r})")
        coerced: list[Any] = []
        for i, value in enumerate(values):
            cfg = _check_config({**base, name: value}, f"{source}: grid.{key}[{i}]")
            value = getattr(cfg, name)
            if value in coerced:
                raise ConfigError(
                    f"{source}: grid.{key}[{i}]: {value!r} is listed twice; every cell must be "
                    "distinct"
                )
            coerced.append(value)
        grid[name] = coerced
    return grid


def _expand_cells(spec: StudyFile, grid: dict[str, list[Any]], source: str) -> list[Cell]:
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
            coerced = getattr(_check_config({name: value}, f"{where}.{key}"), name)
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
    return [Cell(i, c) for i, c in enumerate(combos)]


def _check_search_space(
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
        name = _norm(key)
        where = f"{source}: search_space.{key}"
        if name not in _CONFIG_FIELDS:
            raise _unknown_config_key(key, f"{source}: search_space")
        if name in _STUDY_OWNED_KEYS:
            raise ConfigError(f"{where}: not allowed in a study; {_STUDY_OWNED_KEYS[name]}")
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
            coerced.append(getattr(_check_config({**base, name: value}, label), name))
        if param.type == "categorical":
            if len(set(map(repr, coerced))) != len(coerced):
                raise ConfigError(f"{where}.choices: lists a value twice")
            param = param.model_copy(update={"choices": coerced})
        space[name] = param
    return space


def _check_sampler(spec: StudyFile, grid: dict, space: dict, source: str) -> str:
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


def _check_budget(spec: StudyFile, cells: list[Cell], source: str) -> None:
    if cells and spec.n_trials is not None:
        raise ConfigError(
            f"{source}: n_trials: a grid study runs each of its {len(cells)} cells once; remove "
            "n_trials (use --trials N to run only N trials now)"
        )
