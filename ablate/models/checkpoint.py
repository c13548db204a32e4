"""Our own training checkpoints: the format, writing it, and rebuilding a model from it.

A checkpoint (:func:`save_checkpoint`) is ``{"format", "model": state_dict, "arch": kwargs,
"name": registry name, "optimizer"?, "scheduler"?, ...extra}``, containing only tensors,
dicts, lists, tuples, str, int, float, bool and None, so that it always reloads with
``torch.load(..., weights_only=True)`` (no pickled code is ever executed on load).
:func:`model_from_checkpoint` rebuilds the model from ``arch`` and loads the weights.

Official weights and :func:`load_pretrained`, which both kinds load through, live in
:mod:`ablate.models.pretrained`; their names are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ablate.exceptions import CheckpointError
from ablate.models.compact import CompactTransformer
from ablate.models.pretrained import (
    LoadReport,
    extract_state_dict,
    load_pretrained,
    read_checkpoint,
    read_state_dict,
    resize_positional_embedding,
    unwrap_model,
)

__all__ = [
    "CHECKPOINT_FORMAT", "atomic_torch_save", "read_checkpoint", "LoadReport", "load_checkpoint",
    "load_pretrained", "model_from_checkpoint", "read_state_dict", "resize_positional_embedding",
    "save_checkpoint", "checkpoint_payload",
]

CHECKPOINT_FORMAT = "ablate-checkpoint-v1"
_RESERVED = ("format", "name", "arch", "model", "optimizer", "scheduler")


def atomic_torch_save(payload: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written ``path`` behind (its folder is made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(dict(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _fsync_dir(folder: Path) -> None:
    try:  # some platforms cannot open or sync folders; the rename is still atomic
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _check_serialisable(obj: Any, where: str) -> None:
    """Only what ``torch.load(weights_only=True)`` accepts back; name the first offender."""
    if obj is None or isinstance(obj, (torch.Tensor, str, bool, int, float)):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise CheckpointError(f"checkpoint entry {where} has a key of type "
                                      f"{type(key).__name__}; keys must be str or int")
            _check_serialisable(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_serialisable(value, f"{where}[{i}]")
        return
    raise CheckpointError(f"checkpoint entry {where} is a {type(obj).__name__}; checkpoints hold "
                          "only tensors, dicts, lists, tuples, str, int, float, bool and None "
                          "(convert it first)")


def checkpoint_payload(
    model: CompactTransformer, *, optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None, extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Our checkpoint format as a dict: ``format``, ``name``, ``arch``, ``model`` and more.

    Args:
        model: the model (a torch.compile / DataParallel wrapper is unwrapped).
        optimizer / scheduler: saved through their ``state_dict()`` when given.
        extra: more entries (epoch, step, metrics, config, RNG states, ...); only tensors,
            dicts, lists, tuples, str, int, float, bool and None.
    """
    model = unwrap_model(model)
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise CheckpointError(f"extra checkpoint entries may not be named {', '.join(clash)} "
                              f"(reserved: {', '.join(_RESERVED)})")
    # Plain values only: a text model's arch may hold its initial embedding matrix, which
    # the state dict already carries.
    arch = {k: v for k, v in getattr(model, "arch", {}).items() if not isinstance(v, torch.Tensor)}
    # A schedule may have moved alpha & co. since construction: rebuild with current values.
    if hasattr(model, "variant_params"):
        saved = dict(arch.get("variant_params") or {})
        for key, value in model.variant_params().items():
            # Buffers are float32: keep the user's exact number when it is the same value.
            old = saved.get(key)
            same = old is not None and torch.tensor(float(old), dtype=torch.float32) == value
            if value is not None and not same:
                saved[key] = value
        arch["variant_params"] = saved
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT, "name": getattr(model, "name", type(model).__name__),
        "arch": arch, "model": model.state_dict(),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    payload.update(extra)
    for key, value in payload.items():
        _check_serialisable(value, repr(key))
    return payload


def save_checkpoint(
    path: str | Path, model: CompactTransformer, *, optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None, extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`checkpoint_payload` atomically to ``path`` (returned)."""
    payload = checkpoint_payload(model, optimizer=optimizer, scheduler=scheduler, extra=extra)
    return atomic_torch_save(payload, Path(path).expanduser())


def _validate_checkpoint(obj: Any, where: str) -> dict[str, Any]:
    if not (
        isinstance(obj, Mapping)
        and isinstance(obj.get("model"), Mapping)
        and isinstance(obj.get("arch"), Mapping)
        and isinstance(obj.get("name"), str)
    ):
        found = (
            ", ".join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
        )
        raise CheckpointError(f"{where} is not an ablate checkpoint (needs 'model', 'arch' and "
                              f"'name'; found {found or 'nothing'}); load official weights with "
                              "load_pretrained instead")
    ckpt = dict(obj)
    ckpt["model"] = extract_state_dict(obj["model"], f"{where} ['model']")
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read our checkpoint (``weights_only=True``, onto the CPU): ``{"model": state_dict,
    "arch": {...}, "name": str, ...}``; CheckpointError naming the file otherwise."""
    return _validate_checkpoint(read_checkpoint(path), f"checkpoint {path}")


def model_from_checkpoint(
    path_or_dict: str | Path | Mapping[str, Any], **overrides: Any
) -> CompactTransformer:
    """Rebuild the model recorded in our checkpoint and load its weights; it is returned in
    eval mode, as every ablate loader returns models (``.train()`` to train it).

    Args:
        path_or_dict: a checkpoint file or the dict :func:`load_checkpoint` returned.
        overrides: architecture arguments to change (e.g. ``num_classes`` for fine-tuning,
            ``img_size``, ``variant``); the weights are then adapted as by
            :func:`load_pretrained`.
    """
    if isinstance(path_or_dict, Mapping):
        ckpt, where = _validate_checkpoint(path_or_dict, "checkpoint dict"), "<checkpoint dict>"
    else:
        ckpt, where = load_checkpoint(path_or_dict), str(path_or_dict)
    from ablate.models._registry import create_model  # the registry imports every family

    arch = {**ckpt["arch"], **overrides}
    arch.pop("name", None)
    try:
        new_variant = overrides.get("variant")
        if new_variant and "variant_params" not in overrides:
            from variants import VariantSpec

            if VariantSpec.coerce(new_variant).name != ckpt["arch"].get("variant"):
                arch.pop("variant_params", None)  # the saved ones belong to the old variant
                arch.pop("variant_learned", None)
        model = create_model(ckpt["name"], **arch)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"cannot rebuild {ckpt['name']!r} from {where}: {err}") from None
    load_pretrained(model, ckpt["model"], strict=True)
    return model.eval()
