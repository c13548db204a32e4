"""Run configuration: one frozen dataclass, the single source of truth for a trial.

The same keys are used by `ablate run` flags (``--alpha-schedule`` for ``alpha_schedule``),
by YAML files given with ``--config`` and by the ``base`` section of study files. Every
field carries its help text in ``metadata`` so the CLI is generated from this file and
cannot drift from it. Precedence: dataclass defaults < YAML file < command-line flags.

Defaults follow the paper's CIFAR-10 recipe (AdamW, lr 5.5e-4, wd 0.06, batch 128,
label smoothing 0.1, warmup then cosine to 1e-5) except for what the embedded default
data set (scikit-learn digits on 2 CPU cores) needs to finish in under two minutes.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ablate.cli_options import option
from ablate.exceptions import ConfigError

__all__ = ["RunConfig", "config_from_mapping", "load_yaml", "config_fields", "APPLY_TO_CHOICES",
           "DEVICE_CHOICES", "AUGMENT_CHOICES", "TASK_CHOICES", "VAL_SPLIT_CHOICES",
           "BEST_FROM_CHOICES", "FREEZE_CHOICES"]  # fmt: skip

APPLY_TO_CHOICES = ("attention", "seqpool", "both")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
AUGMENT_CHOICES = ("auto", "none", "crop", "crop_flip", "randaugment", "autoaugment")
TASK_CHOICES = ("auto", "image", "text")
VAL_SPLIT_CHOICES = ("auto", "train", "test_half")
BEST_FROM_CHOICES = ("schedule_end", "any")
FREEZE_CHOICES = ("none", "tokenizer", "encoder")
POS_EMB_CHOICES = ("learnable", "sine", "none")
NORM_CHOICES = ("cct", "pre")


def _f(default: Any, help: str, *, choices: tuple[str, ...] | None = None, group: str = "run"):
    """A config field: its CLI flag, help, choices and help section (:func:`option`)."""
    return option(default, help, choices=choices, group=group)


@dataclass(frozen=True)
class RunConfig:
    # -- what is compared -------------------------------------------------------------
    variant: str = _f("softmax", "attention variant (see `ablate variants`)", group="model")
    apply_to: str = _f(
        "attention", "where the variant runs: every self-attention, sequence pooling, or both",
        choices=APPLY_TO_CHOICES, group="model")
    variant_file: str | None = _f(
        None, "Python file whose @register_attention functions become variants", group="model")
    model: str = _f("cct_2_3x2_32", "backbone name (see `ablate models`)", group="model")
    positional_embedding: str | None = _f(
        None, "override the model's positional embedding", choices=POS_EMB_CHOICES, group="model")
    norm_placement: str = _f(
        "cct", "'cct' = the official layer order (loads official checkpoints); 'pre' = standard "
        "pre-norm", choices=NORM_CHOICES, group="model")
    pretrained: bool = _f(
        False, "timm:/hf: models: start from the library's pretrained weights (read from its "
        "cache; fetched only with --download)", group="model")
    img_size: int | None = _f(
        None, "input resolution (default: the model's own, e.g. 32; 16 for the 8x8 digits)",
        group="model")
    dropout: float | None = _f(None, "dropout rate (official default 0.0)", group="model")
    attention_dropout: float | None = _f(
        None, "attention dropout (official default 0.1)", group="model")
    stochastic_depth: float | None = _f(
        None, "stochastic depth, max rate (official default 0.1)", group="model")
    # -- data -------------------------------------------------------------------------
    task: str = _f(
        "auto", "image or text; 'auto' infers it from the data set", choices=TASK_CHOICES,
        group="data")
    dataset: str = _f(
        "digits", "digits (embedded), cifar10, cifar100, mnist, fashion_mnist, svhn, folder:PATH, "
        "or text: ag_news, trec, sst2, imdb, dbpedia, yelp_polarity, csv:PATH", group="data")
    data_dir: str = _f("./data", "where data sets are stored / downloaded to", group="data")
    download: bool = _f(False, "download a missing data set (never done implicitly)", group="data")
    val_fraction: float = _f(
        0.1, "fraction of the training data held out for validation", group="data")
    test_fraction: float = _f(
        0.2, "fraction held out for test when the data set has no test split", group="data")
    val_split: str = _f(
        "auto", "where validation comes from: 'train' (held out of the training split), "
        "'test_half' (a fixed stratified half of the official test split; the other half is the "
        "test set), or 'auto' (test_half when the initial weights were trained on the full "
        "training split, e.g. official checkpoints; train otherwise)", choices=VAL_SPLIT_CHOICES,
        group="data")
    augment: str = _f(
        "auto", "image augmentation; 'auto' = the paper's recipe for CIFAR-like sets, crop for "
        "digits", choices=AUGMENT_CHOICES, group="data")
    mixup: float | None = _f(
        None, "MixUp alpha, 0 = off (default: recipe's 0.8 for CIFAR)", group="data")
    cutmix: float | None = _f(
        None, "CutMix alpha, 0 = off (default: recipe's 1.0 for CIFAR)", group="data")
    text_col: str = _f("text", "text column for csv:/tsv:/jsonl: data sets", group="data")
    label_col: str = _f("label", "label column for csv:/tsv:/jsonl: data sets", group="data")
    max_len: int = _f(64, "text: tokens per example (longer is cut, shorter padded)", group="data")
    embeddings: str | None = _f(
        None, "text: GloVe file (.txt or .zip); default: the packaged GloVe 6B 50-d vectors",
        group="data")
    freeze_embeddings: bool = _f(False, "text: keep word vectors fixed", group="data")
    # -- optimisation -----------------------------------------------------------------
    epochs: int = _f(50, "training epochs (the paper trains CIFAR for 300)", group="optim")
    batch_size: int = _f(128, "batch size", group="optim")
    lr: float | None = _f(
        None, "peak learning rate (default 5.5e-4; 1e-4 with --init-from or --pretrained)",
        group="optim")
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine", group="optim")
    weight_decay: float = _f(0.06, "AdamW weight decay", group="optim")
    warmup_epochs: float = _f(3.0, "linear warm-up length in epochs", group="optim")
    label_smoothing: float = _f(0.1, "label smoothing", group="optim")
    grad_clip: float = _f(1.0, "clip the gradient norm to this value, 0 = off", group="optim")
    ema: float = _f(0.0, "EMA decay for evaluation weights (e.g. 0.999), 0 = off", group="optim")
    amp: bool = _f(True, "bfloat16 autocast on CUDA (ignored on CPU)", group="optim")
    compile: bool = _f(False, "torch.compile the model", group="optim")
    # -- alpha schedule ---------------------------------------------------------------
    alpha_schedule: str = _f(
        "none", "how the variant's alpha moves every optimizer step: none (keep the variant's "
        "value) or a registered schedule (built in: constant, linear, cosine, step)",
        group="alpha")
    alpha_start: float = _f(0.0, "alpha at step 0", group="alpha")
    alpha_end: float = _f(1.0, "alpha after --alpha-steps", group="alpha")
    alpha_steps: int | None = _f(
        None, "optimizer steps to go from start to end (default: the whole run)", group="alpha")
    alpha_epochs: float | None = _f(
        None, "the same in epochs (exclusive with --alpha-steps)", group="alpha")
    alpha_levels: int = _f(
        4, "step schedule: number of equal jumps from start to end", group="alpha")
    best_from: str = _f(
        "schedule_end", "which epochs the best-validation checkpoint is chosen from: "
        "'schedule_end' = only epochs validated at the schedule's end value (all epochs without a "
        "schedule), 'any'", choices=BEST_FROM_CHOICES, group="alpha")
    # a learned alpha (variant ...:alpha=learned) trains in its own AdamW group, no decay
    alpha_lr: float | None = _f(
        None, "learning rate of a learned alpha (alpha=learned); default: --lr", group="alpha")
    alpha_hold: bool = _f(
        True, "after annealing keep alpha at the end value; --no-alpha-hold repeats the schedule",
        group="alpha")
    # -- fine-tuning ------------------------------------------------------------------
    init_from: str | None = _f(
        None, "weights to start from: official .pth, our checkpoint, runs:/ID or a run id",
        group="finetune")
    freeze: str = _f("none", "freeze part of the model", choices=FREEZE_CHOICES, group="finetune")
    layer_decay: float = _f(1.0, "layer-wise lr decay (1.0 = off, e.g. 0.75)", group="finetune")
    lora_rank: int = _f(0, "LoRA rank on attention and MLP projections, 0 = off", group="finetune")
    lora_alpha: float = _f(16.0, "LoRA scaling numerator (scale = alpha / rank)", group="finetune")
    # -- run --------------------------------------------------------------------------
    seed: int = _f(0, "random seed (same seed + config on CPU = identical metrics)")
    device: str = _f("auto", "compute device", choices=DEVICE_CHOICES)
    tracking_uri: str | None = _f(
        None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    experiment: str = _f("ablate", "MLflow experiment name")
    run_name: str | None = _f(None, "MLflow run name (default: generated from the config)")
    checkpoint_dir: str = _f("./checkpoints", "where last/best checkpoints are written")
    # every epoch's last.pt stays local; MLflow gets it every K epochs, at the end, on a stop
    checkpoint_upload_every: int = _f(
        30, "upload the resume checkpoint to MLflow every K epochs and at the end (0: end only)")
    keep_checkpoints: bool = _f(
        False, "keep a finished run's local checkpoint folder (its files are in MLflow anyway)")
    system_metrics: bool = _f(True, "log CPU / memory / GPU use as system/* metrics")
    system_metrics_interval: float = _f(10.0, "seconds between system-metrics samples")
    quiet: bool = _f(False, "no progress bars")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{f.name}: {value!r} is not valid; choose one of "
                                  f"{', '.join(choices)}")  # fmt: skip
        # alpha_schedule is checked by ablate.trial.run.check: schedules are a registry (a
        # --variant-file or a plug-in may add one), which needs torch, and a config is cheap.
        if self.epochs < 1:
            raise ConfigError(f"epochs: must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.alpha_steps is not None and self.alpha_epochs is not None:
            raise ConfigError("alpha_steps and alpha_epochs are exclusive; give one of them")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank: must be >= 0, got {self.lora_rank}")

    @property
    def effective_lr(self) -> float:
        """Peak learning rate: the recipe's, or a fine-tuning default with --init-from."""
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.init_from or self.pretrained else 5.5e-4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        return config_from_mapping({**self.to_dict(), **changes})


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(RunConfig))


_TYPES = typing.get_type_hints(RunConfig)


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check (and gently convert) one value against the field's declared type."""
    hint = _TYPES[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {name} must not be empty")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
    if base in (int, float):
        kind = "an integer" if base is int else "a number"
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            number = float(value)
            if base is int and number != int(number):
                raise ValueError
        except (ValueError, OverflowError):
            raise ConfigError(f"{source}: {name} must be {kind}, got {value!r}") from None
        return int(number) if base is int else number
    if base is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
        return str(value)
    return value


def config_from_mapping(values: Mapping[str, Any], source: str = "config") -> RunConfig:
    """Build a validated RunConfig; unknown keys and wrong types are errors naming the key.

    Keys may use dashes or underscores (``alpha-schedule`` == ``alpha_schedule``).
    """
    known = {f.name for f in dataclasses.fields(RunConfig)}
    values = _fold_variant_params(values)
    clean: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{source}: unknown key {raw_key!r}{hint}")
        clean[key] = _coerce(key, value, source)
    return RunConfig(**clean)


def _fold_variant_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """``variant: softmax_v`` with ``variant.alpha: 1`` (a run's logged params and
    ``config.yaml``) -> ``variant: softmax_v:alpha=1``, the text form ``--variant`` takes."""
    items = [f"{k[len('variant.'):]}={v}" for k, v in values.items()
             if str(k).startswith("variant.")]
    if not items:
        return dict(values)
    out = {k: v for k, v in values.items() if not str(k).startswith("variant.")}
    out["variant"] = f"{out.get('variant', 'softmax')}:" + ",".join(items)
    return out


def load_yaml(
    path: str | Path, *, kind: str = "config file", keys: str = "config keys"
) -> dict[str, Any]:
    """Read a YAML mapping with safe loading; every error is one line naming the file.

    Aliases (``*name``) are sized before anything is built: a document that would expand to
    more than 100,000 values (the "billion laughs" attack, a few lines of nested anchors)
    is refused at once instead of filling the memory.

    Args:
        path: the file.
        kind: what the file is, for messages ("study file").
        keys: what it should map, for messages ("study keys (name, base, grid, ...)").
    """
    import yaml

    limit = 100_000

    class Loader(yaml.SafeLoader):
        def construct_document(self, node: Any) -> Any:
            sizes: dict[int, int | None] = {}  # node id -> values it expands to (None: open)

            def size(n: Any) -> int:
                if id(n) in sizes:
                    if sizes[id(n)] is None:
                        raise yaml.YAMLError("an alias refers to the node that contains it")
                    return sizes[id(n)] or 0
                sizes[id(n)] = None
                children = n.value if isinstance(n, yaml.SequenceNode) else (
                    [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode)
                    else []
                )
                total = 1 + sum(size(c) for c in children)
                if total > limit:
                    raise yaml.YAMLError(f"its aliases expand to more than {limit:,} values; "
                                         "write the values out instead of nesting anchors")
                sizes[id(n)] = total
                return total

            size(node)
            return super().construct_document(node)

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {kind}")
    try:
        data = yaml.load(path.read_text(), Loader=Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {keys}, got {type(data).__name__}")
    return data
