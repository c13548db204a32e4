"""Study files: YAML -> validated :class:`StudyPlan` -> the trials (grid cells) it stands for.

With :mod:`~ablate.study.schema` (the file's keys, pydantic) and
:mod:`~ablate.study.checks` (the run-config values, through :func:`ablate.trial.resolve.check`).
A study file declares an ablation. Everything in it is checked before any trial starts:
the file's own keys (pydantic, unknown keys are errors), the ``base`` run config and
every grid value and search-space bound (through :func:`ablate.config.config_from_mapping`,
so the keys are exactly those of ``ablate run``), variant strings against the variant
registry, model names against the model registry and data set names (each grid cell whole,
with the same rules a trial's ``resolve`` applies). Errors are one line
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

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from ablate.config import RunConfig, config_from_mapping
from ablate.exceptions import ConfigError
from ablate.study import checks
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
        return config_from_mapping(
            {**self.config_values(params), **run}, source=f"{self.path}: trial"
        )

    def resume_command(self, storage_url: str) -> str:
        """The command that continues this study (what a one-line error suggests)."""
        import shlex

        from ablate.study.storage import display_url

        return shlex.join(
            ["ablate", "study", self.path, *self.overrides, "--storage", display_url(storage_url)]
        )

    def group_keys(self) -> list[str]:
        """Columns of the summary table: the variant and every grid key except the seed."""
        keys = ["variant"] + [k for k in self.grid if k not in ("variant", "seed")]
        return keys


def load_study(
    path: str | Path, overrides: Sequence[str] = (), *, confirm_large: bool = False
) -> StudyPlan:
    """Read, validate and expand a study file; raises ConfigError (one line) when it is bad.

    Args:
        path: the study file.
        overrides: Hydra-style edits applied before validation, e.g. ``base.epochs=2``,
            ``grid.seed=[0,1]`` (the value is YAML), ``~grid.lr`` (remove a key).
        confirm_large: accept a grid of more than :data:`MAX_CELLS` cells.
    """
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
            raise ConfigError(
                f"override {item!r}: expected KEY=VALUE (e.g. base.epochs=2, grid.seed=[0,1]) "
                "or ~KEY to remove a key"
            )
        if path[0] not in StudyFile.model_fields:
            raise ConfigError(
                f"override {item!r}: unknown key {path[0]!r}; valid keys: "
                + ", ".join(StudyFile.model_fields)
            )
        node = data
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(path[: depth + 1])} is not a mapping"
                )
        if remove:
            node.pop(path[-1], None)
            continue
        try:
            node[path[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ConfigError(f"override {item!r}: not a YAML value ({problem})") from None
    return data


def parse_study(
    data: Any, source: str = "study", text: str = "", confirm_large: bool = False
) -> StudyPlan:
    """Validate a study mapping (already parsed YAML); ``source`` names it in errors."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(
            f"{source}: expected a mapping of study keys (name, base, grid, ...), got {got}"
        )
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None

    size = math.prod(len(v) for v in (spec.grid or {}).values())
    if size > MAX_CELLS and not confirm_large:  # sized before anything is expanded
        sizes = " x ".join(str(len(v)) for v in (spec.grid or {}).values())
        raise ConfigError(
            f"{source}: grid: {sizes} = {size:,} cells, more than {MAX_CELLS:,}; shrink it "
            "(e.g. the override grid.seed=[0,1]) or confirm with --yes"
        )
    base = checks.check_base(spec, source)
    variant_files = checks.load_variant_files(spec, base, source)
    grid = checks.check_grid(spec, base, source)
    cells = [Cell(i, c) for i, c in enumerate(checks.expand_grid(spec, grid, source))]
    space = checks.check_search_space(spec, base, grid, source)
    for cell in cells:  # cross-field rules (alpha_steps vs alpha_epochs, model vs data) per cell
        where = f"{source}: grid cell {cell.describe()}"
        checks.check_config({**base, **cell.params}, where, combinations=True)
    sampler = checks.check_sampler(spec, grid, space, source)
    checks.check_budget(spec, cells, source)
    direction = spec.direction or ("minimize" if spec.metric == cv.VAL_LOSS else "maximize")
    return StudyPlan(
        path=source, text=text, spec=spec, base=base, grid=grid, cells=cells, search_space=space,
        sampler=sampler, direction=direction, variant_files=variant_files,
    )
