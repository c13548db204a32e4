"""Study files: YAML -> validated :class:`StudyPlan` -> the trials (grid cells) it stands for.

Three modules: :mod:`~ablate.study.schema` (the file's keys, pydantic),
:mod:`~ablate.study.checks` (the run-config values, through :func:`ablate.trial.resolve.check`)
and this one (the plan: cells, samplers, the trial configs).

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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from ablate.config import RunConfig, config_from_mapping
from ablate.exceptions import ConfigError
from ablate.study.checks import (
    check_base,
    check_budget,
    check_config,
    check_grid,
    check_sampler,
    check_search_space,
    expand_grid,
    load_variant_files,
)
from ablate.study.schema import (
    METRICS,
    ParamSpec,
    PrunerSpec,
    StudyFile,
    format_validation_error,
)

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
        raise ConfigError(format_validation_error(source, err)) from None

    base = check_base(spec, source)
    variant_files = load_variant_files(spec, base, source)
    grid = check_grid(spec, base, source)
    cells = [Cell(i, c) for i, c in enumerate(expand_grid(spec, grid, source))]
    space = check_search_space(spec, base, grid, source)
    for cell in cells:  # cross-field rules (alpha_steps vs alpha_epochs, model vs data) per cell
        check_config(
            {**base, **cell.params},
            f"{source}: grid cell {cell.describe()}",
            combinations=True,
        )
    sampler = check_sampler(spec, grid, space, source)
    check_budget(spec, cells, source)
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
