"""``--init-from`` sources: a local file, an MLflow run's artifact or a logged model, read
into weights, and what the source computed (:func:`attention_of`), which ``ablate finetune``
continues by default (:meth:`SourceWeights.continuation`).

A file is an official Compact-Transformers ``.pth`` (a plain state dict) or one of our
checkpoints; a run is ``runs:/RUN_ID`` (its best checkpoint), ``runs:/RUN_ID/PATH`` or a
bare 32-character run id; a logged model is ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``
(resolved to its version) or ``models:/<model_id>``. Files are read by
:func:`ablate.models.pretrained.read_checkpoint`, logged models by
:func:`ablate.tracking.models.read_logged_model`.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from ablate.exceptions import CheckpointError, first_line
from ablate.models.checkpoint import read_checkpoint
from ablate.tracking.conventions import ARTIFACT_DIR, BEST, LAST

__all__ = [
    "SourceSpec", "SourceWeights", "parse_source", "load_source", "attention_of",
    "DEFAULT_RUN_ARTIFACT",
]

DEFAULT_RUN_ARTIFACT = f"{ARTIFACT_DIR}/{BEST}"
_RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$")
_ACCEPTED = (
    f"an official CCT .pth state dict, one of our checkpoints ({BEST} / {LAST}), "
    "runs:/RUN_ID[/ARTIFACT_PATH], a 32-character MLflow run id, or a logged model "
    "models:/NAME/VERSION, models:/NAME@ALIAS or models:/<model_id>"
)


# Variants that are standard attention exactly at alpha = 0 (their docstrings promise it).
_SOFTMAX_AT_ALPHA_0 = ("softmax_v", "softmax_v_scaled", "alpha_remix", "laser_remix")


def attention_of(
    arch: Mapping[str, Any] | None, params: Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """What a model's attention computes: (``--variant`` text that rebuilds it exactly,
    ``apply_to``); ``("softmax", "attention")`` for standard attention however written.

    Args:
        arch: the model's ``arch`` (None: official weights, standard attention).
        params: the variant parameter values (default: the ones ``arch`` recorded, which our
            checkpoints update to the values the weights ended with). A learned alpha is
            given by its options; its values are weights.
    """
    from variants import LearnedAlpha, get_attention

    arch = arch or {}
    name = arch.get("variant", "softmax")
    values = dict(arch.get("variant_params") or {}) if params is None else dict(params)
    learned = arch.get("variant_learned")
    try:
        defaults = {} if learned else get_attention(name).params  # an old record left out
        values = {**defaults, **values}
    except ValueError:
        pass  # a variant from a file not loaded here: its record is all there is
    values = {k: float(v) for k, v in values.items() if v is not None}
    if name == "softmax" or (
        name in _SOFTMAX_AT_ALPHA_0 and values == {"alpha": 0.0} and not learned
    ):
        return "softmax", "attention"
    items = [f"{k}={v!r}" for k, v in sorted(values.items())]  # repr: the exact value
    if learned:
        rng = learned.get("range")
        items.append(str(LearnedAlpha(learned["shape"], learned["init"],
                                      tuple(rng) if rng is not None else None)))
    return (f"{name}:{','.join(items)}" if items else name), arch.get("apply_to", "attention")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--init-from`` value: a local file, an artifact of an MLflow run, or a
    logged model (``models:/...``: as given until read, then its resolved form)."""

    text: str
    path: Path | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    model_uri: str | None = None

    @property
    def is_run(self) -> bool:
        return self.run_id is not None

    def describe(self) -> str:
        if self.model_uri:
            return self.model_uri
        return f"runs:/{self.run_id}/{self.artifact_path}" if self.is_run else str(self.path)


@dataclass
class SourceWeights:
    """Weights read from a source, ready for :func:`~ablate.models.pretrained.load_pretrained`."""

    spec: SourceSpec
    kind: str  # official (a plain state dict) or checkpoint (ours, with arch and name)
    state_dict: dict[str, torch.Tensor]  # LoRA adapters (if the source had them) merged in
    name: str | None = None  # our checkpoint's model (None for official files)
    arch: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # our epoch, val_acc
    merged_adapters: int = 0  # LoRA-adapted projections merged while reading
    config: dict[str, Any] | None = None  # the source run's config (ours): its data split
    model_id: str | None = None  # the logged model of a models:/ source

    @property
    def in_chans(self) -> int | None:
        """Image channels the weights expect; None for text models (or no conv tokenizer)."""
        if self.arch is not None and "in_chans" in self.arch:
            return int(self.arch["in_chans"])
        w = self.state_dict.get("tokenizer.conv_layers.0.0.weight")  # image conv: (out, in, k, k)
        return int(w.shape[1]) if w is not None and w.dim() == 4 else None

    def continuation(self) -> dict[str, Any]:
        """``ablate finetune``'s defaults, which continue what the source computed.

        Standard attention (official weights, our ``softmax`` models): ``softmax_v``
        annealed linearly from alpha 0, which is exactly standard attention, to 1. Our other
        models: their variant with every parameter value they ended with and their
        ``apply_to``, no schedule (``--alpha-schedule linear`` then starts at their alpha).
        """
        variant, apply_to = attention_of(self.arch)
        if variant == "softmax":
            return {"variant": "softmax_v", "alpha_schedule": "linear", "alpha_start": 0.0,
                    "alpha_end": 1.0}
        out = {"variant": variant, "apply_to": apply_to, "alpha_schedule": "none"}
        alpha = (self.arch or {}).get("variant_params", {}).get("alpha")
        return {**out, "alpha_start": float(alpha)} if alpha is not None else out


def parse_source(text: str) -> SourceSpec:
    """Classify an ``--init-from`` value; an existing file wins over a run-id look-alike;
    CheckpointError listing the accepted forms otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(f"init_from: empty source; give {_ACCEPTED}")
    text = text.strip()
    if text.startswith("models:/"):
        return SourceSpec(text, model_uri=text)
    if text.startswith("runs:/"):
        run_id, _, artifact = text[len("runs:/"):].strip("/").partition("/")
        if not _RUN_ID.match(run_id):
            raise CheckpointError(f"init_from: {text!r} does not start with a 32-character run id "
                                  "(expected runs:/RUN_ID or runs:/RUN_ID/ARTIFACT_PATH)")
        artifact = artifact or DEFAULT_RUN_ARTIFACT
        return SourceSpec(text, run_id=run_id.lower(), artifact_path=artifact)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_file():
            raise CheckpointError(f"init_from: {path} is a directory; give the checkpoint file in "
                                  "it")
        return SourceSpec(text, path=path)
    if _RUN_ID.match(text):
        return SourceSpec(text, run_id=text.lower(), artifact_path=DEFAULT_RUN_ARTIFACT)
    raise CheckpointError(f"init_from: {text!r} is not an existing file or an MLflow run; give "
                          f"{_ACCEPTED}")


def _download(spec: SourceSpec, tracking_uri: str | None, dst: str) -> Path:
    """Fetch a run's artifact into ``dst`` (a folder artifact: its best checkpoint)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from ablate.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    try:
        local = Path(download_artifacts(run_id=spec.run_id, artifact_path=spec.artifact_path,
                                        dst_path=dst, tracking_uri=uri))
    except (MlflowException, OSError) as err:  # an unknown run or a missing artifact
        raise CheckpointError(f"init_from: cannot fetch {spec.artifact_path} of run "
                              f"{spec.run_id} from {uri}: {first_line(err)}") from None
    if local.is_dir() and not (local / BEST).is_file():
        found = ", ".join(sorted(p.name for p in local.iterdir())) or "nothing"
        raise CheckpointError(f"init_from: runs:/{spec.run_id}/{spec.artifact_path} is a folder "
                              f"without {BEST} (it holds {found}); name the checkpoint file in it")
    return local / BEST if local.is_dir() else local


# The last source read, by (text, store, file stamp): `ablate finetune` reads its source for
# its defaults and the trial reads it again (one download, one alias resolution), and a
# study's trials share one.
_last_read: dict[tuple[Any, ...], SourceWeights] = {}


def load_source(init_from: str, tracking_uri: str | None = None) -> SourceWeights:
    """Read the weights ``--init-from`` names (downloading a run's artifact or a logged
    model when needed; the last source read is kept and not read again).

    Args:
        init_from: file path, ``runs:/RUN_ID[/PATH]``, a bare run id or ``models:/...``.
        tracking_uri: tracking server of run and model sources (None: $MLFLOW_TRACKING_URI,
            else the default SQLite file).
    """
    from ablate.tracking import resolve_tracking_uri

    path = Path(init_from).expanduser() if isinstance(init_from, str) else None
    stamp = (path.stat().st_mtime_ns, path.stat().st_size) if path and path.is_file() else None
    key = (init_from, resolve_tracking_uri(tracking_uri), stamp)
    if key not in _last_read:
        source = _read_source(init_from, tracking_uri)
        _last_read.clear()
        _last_read[key] = source
    return _last_read[key]


def _read_source(init_from: str, tracking_uri: str | None) -> SourceWeights:
    from ablate.models.checkpoint import read_state_dict
    from ablate.models.lora import merge_lora_state_dict

    spec = parse_source(init_from)
    if spec.model_uri:
        from ablate.tracking.models import read_logged_model

        obj = read_logged_model(spec.model_uri, tracking_uri)
        spec = replace(spec, model_uri=obj["model_uri"])  # an alias resolved to its version
    elif spec.is_run:
        with tempfile.TemporaryDirectory(prefix="ablate-init-") as tmp:
            obj = read_checkpoint(_download(spec, tracking_uri, tmp))
    else:
        obj = read_checkpoint(spec.path)
    ours = isinstance(obj, Mapping) and isinstance(obj.get("arch"), Mapping) and "name" in obj
    try:
        sd = read_state_dict(obj)
        merged = merge_lora_state_dict(sd)
    except (CheckpointError, ValueError) as err:
        raise CheckpointError(f"init_from {spec.describe()}: {err}") from None
    src = SourceWeights(spec, "official", merged, merged_adapters=(len(sd) - len(merged)) // 3,
                        model_id=obj["model_id"] if spec.model_uri else None)
    if not ours:
        return src
    config = obj.get("config")
    return replace(
        src, kind="checkpoint", name=obj["name"], arch=dict(obj["arch"]),
        extra={k: obj[k] for k in ("epoch", "val_acc") if isinstance(obj.get(k), (int, float))},
        config=dict(config) if isinstance(config, Mapping) else None,
    )
