"""The schema of a study file (pydantic; unknown keys are errors), and pydantic's first
complaint as one line naming the file, the key path and what was expected. The run-config
values inside ``base``, ``grid`` and ``search_space`` are :mod:`ablate.study.spec`'s part."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ablate.tracking import conventions as cv

__all__ = ["METRICS", "ParamSpec", "PrunerSpec", "StudyFile", "format_validation_error"]

# Validation curves the objective can follow (logged by every trial at every epoch).
METRICS = tuple(cv.curve(q, "val") for q in ("acc", "loss", "f1", "precision", "recall"))


def _metric(value: Any) -> Any:
    # The names before the curves were grouped (val_acc is now acc/val).
    if isinstance(value, str) and value.startswith("val_"):
        raise ValueError(f"{value!r} is now called {cv.curve(value[4:], 'val')!r}")
    return value


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
                raise ValueError(f"a categorical parameter takes only 'choices', not "
                                 f"{', '.join(extra)}")  # fmt: skip
            return self
        if self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes low/high, not 'choices'")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs both 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"'low' must be smaller than 'high', got low={self.low:g} "
                             f"high={self.high:g}")  # fmt: skip
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
        options = {"none": (), "median": _MEDIAN_OPTIONS, "hyperband": _HYPERBAND_OPTIONS}
        allowed = options[self.type]
        given = [k for k in _MEDIAN_OPTIONS + _HYPERBAND_OPTIONS if getattr(self, k) is not None]
        wrong = [k for k in given if k not in allowed]
        if wrong:
            valid = ", ".join(allowed) if allowed else "no options"
            raise ValueError(f"the {self.type} pruner does not take {', '.join(wrong)} (it takes "
                             f"{valid})")  # fmt: skip
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
    metric / direction: the validation curve followed (default acc/val; direction
        maximize, minimize for loss/val). objective: best (default) or final epoch value.
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
    metric: Annotated[Literal[METRICS], BeforeValidator(_metric)] = cv.VAL_ACC  # type: ignore
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


def format_validation_error(path: str, err: pydantic.ValidationError) -> str:
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
