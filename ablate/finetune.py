"""Fine-tuning: start from pretrained weights, freeze / decay / adapt, export merged weights.

:func:`ablate.resolve.resolve` reads ``--init-from`` once (:func:`load_source`; the
weights' channel count converts the data, e.g. the 1-channel digits become 3-channel for an
RGB checkpoint). The trial runner then calls three hooks when fine-tuning is asked for
(``--init-from``, ``--freeze``, ``--layer-decay`` or ``--lora-rank``):

1. :func:`prepare_model` on the freshly built model: loads ``--init-from`` (head replaced
   when the class count differs, positional embedding interpolated when the resolution
   differs), freezes, adds LoRA adapters; returns what it did, logged as ``init.*`` params;
2. :func:`lr_scale_fn` for layer-wise learning-rate decay;
3. :func:`export_model` at the end: the final weights with adapters merged, saved as our
   checkpoint (plain official key names), so they load into a model without adapters.

Sources (``--init-from``):

- a file: an official Compact-Transformers ``.pth`` (a plain state dict) or one of our
  checkpoints (``best.pt`` / ``last.pt`` / ``model.pt``: a dict with ``model``, ``arch``,
  ``name``); always read with ``torch.load(weights_only=True)``;
- an MLflow run: ``runs:/RUN_ID`` (its ``checkpoints/best.pt``), ``runs:/RUN_ID/PATH``
  (that artifact) or a bare 32-character run id, fetched from the run's tracking server
  (``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).

Model stages, as freezing and layer decay see them (L encoder blocks):

- embedding stage (depth 0): ``tokenizer.*``, ``embedder.*`` (text word vectors),
  ``classifier.positional_emb``, ``classifier.class_emb``;
- block i (depth i + 1): ``classifier.blocks.{i}.*``;
- head (depth L + 1): everything after the blocks: ``classifier.norm``,
  ``classifier.attention_pool`` and ``classifier.fc``.

``--freeze tokenizer`` freezes the embedding stage; ``--freeze encoder`` freezes everything
except the pooling + classifier head (``attention_pool`` and ``fc``): a linear probe on
sequence-pooled features. With LoRA only the adapters and that same head train. Layer decay
multiplies the learning rate of depth d by ``layer_decay ** (L + 1 - d)``: head 1, block i
``layer_decay ** (L - i)``, embeddings ``layer_decay ** (L + 1)``.
"""

from __future__ import annotations

import copy
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torch.nn as nn

from ablate.exceptions import CheckpointError, ConfigError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "SourceSpec",
    "SourceWeights",
    "parse_source",
    "load_source",
    "prepare_model",
    "lr_scale_fn",
    "export_model",
    "freeze_parameters",
    "parameter_depth",
    "HEAD_PREFIXES",
    "DEFAULT_RUN_ARTIFACT",
]

DEFAULT_RUN_ARTIFACT = "checkpoints/best.pt"
HEAD_PREFIXES = ("classifier.attention_pool.", "classifier.fc.")
_EMBEDDING_PREFIXES = ("tokenizer.", "embedder.")
_EMBEDDING_NAMES = ("classifier.positional_emb", "classifier.class_emb")
_BLOCK = re.compile(r"^classifier\.blocks\.(\d+)\.")
_RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$")
_ACCEPTED = (
    "an official CCT .pth state dict, one of our checkpoints (best.pt / last.pt / model.pt), "
    "runs:/RUN_ID[/ARTIFACT_PATH] or a 32-character MLflow run id"
)
# Architecture fields that change what the weights compute without changing any shape:
# a checkpoint trained with other values would load silently and be wrong.
_SEMANTIC_ARCH = (
    "family", "num_heads", "norm_placement", "kernel", "kernel_size", "stride", "padding",
    "conv_activation", "conv_max_pool", "seq_pool",
)


# ---------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--init-from`` value: a local file, or an artifact of an MLflow run."""

    text: str
    path: Path | None = None
    run_id: str | None = None
    artifact_path: str | None = None

    @property
    def is_run(self) -> bool:
        return self.run_id is not None

    def describe(self) -> str:
        return f"runs:/{self.run_id}/{self.artifact_path}" if self.is_run else str(self.path)


@dataclass
class SourceWeights:
    """Weights read from a source, ready for :func:`~ablate.models.checkpoint.load_pretrained`.

    Attributes:
        spec: where they came from.
        kind: ``official`` (a plain state dict) or ``checkpoint`` (ours, with arch and name).
        state_dict: flat state dict, LoRA adapters (if the source run had them) merged in.
        name / arch: the model our checkpoint was saved from (None for official files).
        extra: scalar facts our checkpoint carries (``epoch``, ``val_acc``).
        merged_adapters: LoRA-adapted projections merged while reading.
    """

    spec: SourceSpec
    kind: str
    state_dict: dict[str, torch.Tensor]
    name: str | None = None
    arch: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    merged_adapters: int = 0
    config: dict[str, Any] | None = None  # the source run's config (ours only): its data split

    @property
    def in_chans(self) -> int | None:
        """Image channels the weights expect; None for text models (or no conv tokenizer)."""
        if self.arch is not None and "in_chans" in self.arch:
            return int(self.arch["in_chans"])
        w = self.state_dict.get("tokenizer.conv_layers.0.0.weight")  # image conv: (out, in, k, k)
        return int(w.shape[1]) if w is not None and w.dim() == 4 else None


def parse_source(text: str) -> SourceSpec:
    """Classify an ``--init-from`` value; an existing file wins over a run-id look-alike.

    Raises:
        CheckpointError: none of the accepted forms (the message lists them).
    """
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(f"init_from: empty source; give {_ACCEPTED}")
    text = text.strip()
    if text.startswith("runs:/"):
        run_id, _, artifact = text[len("runs:/"):].strip("/").partition("/")
        if not _RUN_ID.match(run_id):
            raise CheckpointError(
                f"init_from: {text!r} does not start with a 32-character run id "
                "(expected runs:/RUN_ID or runs:/RUN_ID/ARTIFACT_PATH)"
            )
        artifact = artifact or DEFAULT_RUN_ARTIFACT
        return SourceSpec(text, run_id=run_id.lower(), artifact_path=artifact)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_file():
            raise CheckpointError(
                f"init_from: {path} is a directory; give the checkpoint file in it"
            )
        return SourceSpec(text, path=path)
    if _RUN_ID.match(text):
        return SourceSpec(text, run_id=text.lower(), artifact_path=DEFAULT_RUN_ARTIFACT)
    raise CheckpointError(
        f"init_from: {text!r} is not an existing file or an MLflow run; give {_ACCEPTED}"
    )


def _download(spec: SourceSpec, tracking_uri: str | None, dst: str) -> Path:
    """Fetch a run's artifact into ``dst`` (a folder artifact: its best.pt)."""
    from mlflow.artifacts import download_artifacts

    from ablate.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        local = Path(
            download_artifacts(
                run_id=spec.run_id,
                artifact_path=spec.artifact_path,
                dst_path=dst,
                tracking_uri=uri,
            )
        )
    except Exception as err:  # MlflowException, OSError, ...: unknown run or missing artifact
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise CheckpointError(
            f"init_from: cannot fetch {spec.artifact_path} of run {spec.run_id} "
            f"from {uri}: {first}"
        ) from None
    if local.is_dir():
        candidate = local / "best.pt"
        if not candidate.is_file():
            found = ", ".join(sorted(p.name for p in local.iterdir())) or "nothing"
            raise CheckpointError(
                f"init_from: runs:/{spec.run_id}/{spec.artifact_path} is a folder without best.pt "
                f"(it holds {found}); name the checkpoint file in it"
            )
        local = candidate
    return local


def _read(path: Path) -> Any:
    # The checkpoint module owns reading (weights_only=True, one-line errors naming the file).
    from ablate.models.checkpoint import _torch_load

    return _torch_load(path)


def _is_our_checkpoint(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and isinstance(obj.get("model"), Mapping)
        and isinstance(obj.get("arch"), Mapping)
        and isinstance(obj.get("name"), str)
    )


def load_source(init_from: str, tracking_uri: str | None = None) -> SourceWeights:
    """Read the weights ``--init-from`` names (downloading a run's artifact when needed).

    Args:
        init_from: file path, ``runs:/RUN_ID[/PATH]`` or a bare run id.
        tracking_uri: tracking server of run sources (None: $MLFLOW_TRACKING_URI, else the
            default SQLite file).

    Raises:
        CheckpointError: unknown form, missing run / artifact / file, unreadable file.
    """
    from ablate.lora import merge_lora_state_dict
    from ablate.models.checkpoint import read_state_dict

    spec = parse_source(init_from)
    if spec.is_run:
        with tempfile.TemporaryDirectory(prefix="ablate-init-") as tmp:
            obj = _read(_download(spec, tracking_uri, tmp))
    else:
        obj = _read(spec.path)
    ours = _is_our_checkpoint(obj)
    try:
        sd = read_state_dict(obj)
    except CheckpointError as err:
        raise CheckpointError(f"init_from {spec.describe()}: {err}") from None
    n_before = len(sd)
    try:
        merged = merge_lora_state_dict(sd)
    except ValueError as err:
        raise CheckpointError(f"init_from {spec.describe()}: {err}") from None
    n_adapters = (n_before - len(merged)) // 3
    extra = {}
    if ours:
        extra = {k: obj[k] for k in ("epoch", "val_acc") if isinstance(obj.get(k), (int, float))}
    return SourceWeights(
        spec=spec,
        kind="checkpoint" if ours else "official",
        state_dict=merged,
        name=obj["name"] if ours else None,
        arch=dict(obj["arch"]) if ours else None,
        extra=extra,
        merged_adapters=n_adapters,
        config=dict(obj["config"]) if ours and isinstance(obj.get("config"), Mapping) else None,
    )


# ---------------------------------------------------------------------------------------
# model stages: freezing and layer decay


def _num_blocks(model: nn.Module) -> int:
    """L, the encoder blocks: a model's own ``num_blocks`` (timm / Hugging Face wrappers),
    else the compact transformers' ``classifier.blocks``."""
    if isinstance(getattr(model, "num_blocks", None), int):
        return model.num_blocks
    blocks = getattr(getattr(model, "classifier", None), "blocks", None)
    if blocks is None:
        raise ConfigError(
            f"{getattr(model, 'name', type(model).__name__)} has no classifier.blocks; "
            "freezing, layer decay and LoRA need a compact transformer from `ablate models` "
            "or a timm: / hf: model"
        )
    return len(blocks)


def parameter_depth(name: str, num_layers: int, model: nn.Module | None = None) -> int:
    """0 for the embedding stage, i + 1 for block i, ``num_layers + 1`` for the head.

    Args:
        name: a parameter name as ``model.named_parameters()`` gives it.
        num_layers: L, the number of encoder blocks.
        model: a model that maps its own names (``model.stage_of(name)``, e.g. timm and
            Hugging Face wrappers, whose blocks are ``blocks.i`` / ``encoder.layer.i``);
            None or a compact transformer: the official names above.
    """
    stage_of = getattr(model, "stage_of", None)
    if stage_of is not None:
        return int(stage_of(name))
    if name.startswith(_EMBEDDING_PREFIXES) or name in _EMBEDDING_NAMES:
        return 0
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def _is_head(name: str, model: nn.Module | None = None) -> bool:
    """The pooling + classifier head (what a linear probe trains): a model's own
    ``head_prefixes`` when it has them, else the compact transformers' ones."""
    return name.startswith(getattr(model, "head_prefixes", None) or HEAD_PREFIXES)


def freeze_parameters(model: nn.Module, what: str) -> list[str]:
    """Stop gradients for part of the model (in place).

    Args:
        model: a compact transformer, or a timm / Hugging Face wrapper.
        what: ``tokenizer`` (the embedding stage), ``encoder`` (all but the pooling +
            classifier head) or ``none``.

    Returns:
        Names of the parameters frozen by this call.
    """
    from ablate.config import FREEZE_CHOICES

    if what not in FREEZE_CHOICES:
        raise ConfigError(
            f"freeze: {what!r} is not valid; choose one of {', '.join(FREEZE_CHOICES)}"
        )
    if what == "none":
        return []
    n = _num_blocks(model)
    frozen = []
    for name, p in model.named_parameters():
        if what == "tokenizer":
            hit = parameter_depth(name, n, model) == 0
        else:
            hit = not _is_head(name, model)
        if hit and p.requires_grad:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def _check_layer_decay(value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"layer_decay: must be in (0, 1] (1.0 = off, e.g. 0.75), got {value}")


def lr_scale_fn(model: nn.Module, cfg: "RunConfig") -> Callable[[str], float] | None:
    """Per-parameter learning-rate multiplier for layer-wise decay; None when it is off.

    Head 1.0, block i of L ``layer_decay ** (L - i)``, tokenizer / embeddings
    ``layer_decay ** (L + 1)``.
    """
    _check_layer_decay(cfg.layer_decay)
    if cfg.layer_decay == 1.0:
        return None
    n = _num_blocks(model)
    decay = cfg.layer_decay

    def scale(name: str) -> float:
        return decay ** (n + 1 - parameter_depth(name, n, model))

    return scale


# ---------------------------------------------------------------------------------------
# the hooks


def _check_options(cfg: "RunConfig") -> None:
    _check_layer_decay(cfg.layer_decay)
    if cfg.lora_rank and cfg.freeze == "encoder":
        raise ConfigError(
            "freeze 'encoder' would freeze the LoRA adapters too; with --lora-rank use "
            "--freeze none (adapters + head train, the rest is frozen anyway)"
        )


def _check_compatible(src: SourceWeights, model: nn.Module, cfg: "RunConfig") -> None:
    """Refuse our checkpoints whose architecture differs in a way shapes do not reveal."""
    ours = dict(getattr(model, "arch", {}))
    if src.arch is None:
        if ours.get("norm_placement", "cct") != "cct":
            warnings.warn(
                f"init_from {src.spec.describe()}: official weights were trained with the "
                "official layer order, but this run uses "
                f"norm_placement={ours['norm_placement']!r}",
                stacklevel=3,
            )
        return
    diffs = [
        f"{key}={src.arch[key]!r} (this run: {ours[key]!r})"
        for key in _SEMANTIC_ARCH
        if key in src.arch and key in ours and src.arch[key] != ours[key]
    ]
    if diffs:
        same_name = src.name == getattr(model, "name", None)
        hint = "matching options" if same_name else f"--model {src.name}"
        raise CheckpointError(
            f"init_from {src.spec.describe()}: the checkpoint's {src.name} was built with "
            f"{', '.join(diffs)}; use {hint}"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def prepare_model(
    model: nn.Module, cfg: "RunConfig", src: SourceWeights | None = None
) -> dict[str, Any]:
    """Load the initial weights, apply ``--freeze`` and ``--lora-rank`` to ``model`` (in place).

    Args:
        model: the freshly built model (on the CPU, before the optimizer exists).
        cfg: the run configuration.
        src: the ``--init-from`` weights, already read by :func:`ablate.resolve.resolve`
            (read here when omitted).

    Returns:
        What was done, logged as ``init.<key>`` params: ``source``, ``source_kind``,
        ``source_file``, ``source_model``, ``loaded_tensors``, ``resized``, ``head``, ...

    Raises:
        CheckpointError: the source cannot be read or does not fit the model.
        ConfigError: contradictory fine-tuning options.
    """
    from ablate.lora import apply_lora, is_lora_parameter
    from ablate.models.checkpoint import load_pretrained

    _check_options(cfg)
    info: dict[str, Any] = {}
    if cfg.init_from:
        src = src if src is not None else load_source(cfg.init_from, cfg.tracking_uri)
        _check_compatible(src, model, cfg)
        try:
            report = load_pretrained(model, src.state_dict, strict=True)
        except CheckpointError as err:
            msg = str(err).replace("checkpoint <state dict>", f"init_from {src.spec.describe()}")
            if src.name and src.name != getattr(model, "name", None):
                msg += f" (the checkpoint is a {src.name}; try --model {src.name})"
            raise CheckpointError(msg) from None
        info.update(
            source=cfg.init_from,
            source_kind=src.kind,
            source_file=src.spec.describe(),
            source_model=src.name or "unknown (official state dict)",
            loaded_tensors=len(report.loaded),
            resized="; ".join(
                f"{k} {_shape(old)} -> {_shape(new)}" for k, (old, new) in report.resized.items()
            ) or "none",
            head=(
                f"replaced ({report.head_classes[0]} -> {report.head_classes[1]} classes)"
                if report.head_replaced and report.head_classes
                else "loaded"
            ),
        )
        if src.spec.is_run:
            info["source_run_id"] = src.spec.run_id
        for key, value in src.extra.items():
            info[f"source_{key}"] = value
        if src.merged_adapters:
            info["source_lora_merged"] = src.merged_adapters
        if report.notes:
            info["notes"] = "; ".join(report.notes)
    n_frozen = len(freeze_parameters(model, cfg.freeze))
    if cfg.freeze != "none":
        info["frozen_tensors"] = n_frozen
    if cfg.lora_rank:
        wrapped = apply_lora(model, cfg.lora_rank, cfg.lora_alpha)
        for name, p in model.named_parameters():
            if not (is_lora_parameter(name) or _is_head(name, model)):
                p.requires_grad_(False)
        info["lora_modules"] = len(wrapped)
        info["lora_scale"] = cfg.lora_alpha / cfg.lora_rank
    return info


def export_model(model: nn.Module, path: str | Path, cfg: "RunConfig") -> Path:
    """Save ``model`` with LoRA adapters merged, as our checkpoint with official key names.

    The file loads into a plain model (:func:`~ablate.models.checkpoint.model_from_checkpoint`
    or ``--init-from``); ``arch`` records the variant parameters (alpha) the model has now.

    Args:
        model: the trained model (adapted or not); it is not modified.
        path: destination file.
        cfg: the run configuration (stored under ``config``).
    """
    from ablate.lora import lora_modules, merge_lora
    from ablate.models.checkpoint import save_checkpoint

    base = getattr(model, "_orig_mod", model)  # torch.compile wrapper -> the model itself
    n_adapters = len(lora_modules(base))
    plain = merge_lora(copy.deepcopy(base))
    # Plain values only (the text models' arch may hold the initial embedding matrix,
    # which the state dict already carries).
    arch = getattr(plain, "arch", {})
    plain.arch = {k: v for k, v in arch.items() if not isinstance(v, torch.Tensor)}
    extra = {"config": cfg.to_dict(), "init_from": cfg.init_from, "lora_merged": n_adapters}
    return save_checkpoint(path, plain, extra=extra)
