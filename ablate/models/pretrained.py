"""Official (foreign) weights: reading state dicts and loading them into our models.

Official Compact-Transformers ``.pth`` files hold a plain state dict; :func:`load_pretrained`
copies one into a model built by :func:`~ablate.models.create_model`. It adapts exactly two
things, and says so in its :class:`LoadReport`: a positional embedding whose token count
differs (other image size or sequence length) is interpolated, and a classifier head whose
class count differs is left freshly initialised. Anything else that does not fit (missing,
unexpected or mis-shaped keys) is refused with one message naming every offending key.
Our own checkpoints (:mod:`ablate.models.checkpoint`) load through here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ablate.exceptions import CheckpointError, first_line
from ablate.models.compact import CompactTransformer, ConvTokenizer, sinusoidal_embedding

__all__ = [
    "LoadReport", "read_checkpoint", "load_pretrained", "read_state_dict",
    "resize_positional_embedding", "extract_state_dict", "unwrap_model",
]


def read_checkpoint(
    path: str | Path, *, unreadable: Literal["raise", "none"] = "raise"
) -> Any:
    """Whatever a checkpoint file holds, loaded on the CPU with ``weights_only=True`` (no
    pickled code runs). A missing, truncated or foreign file is a one-line CheckpointError
    naming it, or None with ``unreadable="none"`` (resume then falls back to an older file).
    """
    p = Path(path).expanduser()
    problem = (
        None if p.is_file()
        else f"checkpoint file {p} does not exist" if not p.exists()
        else f"checkpoint path {p} is not a file"
    )
    if problem is None:
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - truncated files raise EOFError, RuntimeError, ...
            problem = (
                f"cannot read checkpoint {p} with torch.load(weights_only=True): "
                f"{type(err).__name__}: {first_line(err, 200)}"
            )
    if unreadable == "none":
        return None
    raise CheckpointError(problem)


_PE_KEY = "classifier.positional_emb"
_FC_KEYS = ("classifier.fc.weight", "classifier.fc.bias")
# Prefixes added by wrappers: DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_Resized = dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did."""

    source: str  # the file (or <state dict>) the weights came from
    loaded: tuple[str, ...]  # keys copied into the model (resized ones included)
    resized: _Resized = field(default_factory=dict)  # key -> (checkpoint shape, model shape)
    head_replaced: bool = False  # another class count: classifier.fc kept its fresh init
    head_classes: tuple[int, int] | None = None  # (checkpoint classes, model classes)
    missing: tuple[str, ...] = ()  # keys tolerated because strict=False
    unexpected: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # anything else worth telling, one line each

    def summary(self) -> str:
        """One line for logs, e.g. ``loaded 104 tensors from x.pth; resized ...``."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        for key, (old, new) in self.resized.items():
            parts.append(f"resized {key} {list(old)} -> {list(new)}")
        if self.head_replaced and self.head_classes is not None:
            parts.append(f"new classifier head ({self.head_classes[0]} -> {self.head_classes[1]} "
                         "classes)")
        if self.missing:
            parts.append(f"left at init (missing): {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"ignored (unexpected): {', '.join(self.unexpected)}")
        parts.extend(self.notes)
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------
# reading


def _strip_wrapper_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``module.`` / ``_orig_mod.`` when *every* key carries it (a wrapped model)."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


def extract_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """A loaded object -> flat state dict: plain state dicts as they are, ``obj["model"]``
    for our checkpoints, ``obj["state_dict"]`` for timm-style training checkpoints."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict or an "
                              "ablate checkpoint")
    for wrapper_key in ("model", "state_dict"):
        if isinstance(obj.get(wrapper_key), Mapping):
            obj = obj[wrapper_key]
            break
    bad = [
        str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(
            f"{where} is not a state dict: entries that are not tensors: {shown}"
        )
    if not obj:
        raise CheckpointError(f"{where} holds an empty state dict")
    return _strip_wrapper_prefixes(obj)


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from an official ``.pth``/``.pt`` file, our checkpoint, or a mapping (a
    state dict or a checkpoint dict with a ``"model"`` (ours) or ``"state_dict"`` entry),
    without a ``module.`` / ``_orig_mod.`` prefix on every key (DataParallel, torch.compile).
    CheckpointError naming the file when it is missing, unreadable or no state dict."""
    if isinstance(source, Mapping):
        return extract_state_dict(source, "<state dict>")
    return extract_state_dict(read_checkpoint(source), f"checkpoint {source}")


# ---------------------------------------------------------------------------------------
# positional embedding resizing


def resize_positional_embedding(
    pe: torch.Tensor, new_rows: int, *, n_prefix: int = 0, grid: bool = True
) -> torch.Tensor:
    """Interpolate a (1, n_prefix + n_tokens, dim) positional table to ``new_rows`` rows.

    ``n_prefix`` leading rows are not positions (ViT-Lite's class-token row) and are kept.
    ``grid``: the token rows are a square image grid (row-major, as the conv tokenizer
    flattens it), interpolated bilinearly in 2-D; otherwise, or when either token count is
    not a perfect square, linearly along the sequence.
    """
    if pe.dim() != 3 or pe.shape[0] != 1:
        raise ValueError("positional embedding must have shape (1, rows, dim), got "
                         f"{tuple(pe.shape)}")
    old_tokens, new_tokens = pe.shape[1] - n_prefix, new_rows - n_prefix
    if old_tokens < 1 or new_tokens < 1:
        raise ValueError(f"cannot resize a positional embedding of {pe.shape[1]} rows to "
                         f"{new_rows}")
    dtype = pe.dtype
    prefix, tokens = pe[:, :n_prefix], pe[:, n_prefix:].float()  # (1, N, C)
    g_old, g_new = math.isqrt(old_tokens), math.isqrt(new_tokens)
    if grid and g_old * g_old == old_tokens and g_new * g_new == new_tokens:
        img = tokens.reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2)  # (1, C, g, g)
        img = F.interpolate(img, size=(g_new, g_new), mode="bilinear", align_corners=False)
        tokens = img.permute(0, 2, 3, 1).reshape(1, new_tokens, -1)  # (1, g'*g', C)
    else:
        seq = tokens.transpose(1, 2)  # (1, C, N)
        seq = F.interpolate(seq, size=new_tokens, mode="linear", align_corners=False)
        tokens = seq.transpose(1, 2)  # (1, N', C)
    return torch.cat([prefix, tokens.to(dtype)], dim=1)


def _is_sinusoidal(value: torch.Tensor) -> bool:
    rows, dim = value.shape[1], value.shape[2]
    return torch.allclose(value.float(), sinusoidal_embedding(rows, dim), atol=1e-5, rtol=0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying model of torch.compile / DataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or (
            model.module
            if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
            else None
        )
        if inner is None:
            return model
        model = inner


# ---------------------------------------------------------------------------------------
# loading weights into a model


def load_pretrained(
    model: CompactTransformer, source: str | Path | Mapping[str, Any], *, strict: bool = True
) -> LoadReport:
    """Load official (or our) weights into ``model``, adapting only what is safe to adapt.

    - ``classifier.positional_emb`` with another token count (other image size / length):
      a sinusoidal table is regenerated for the new size; learned values are interpolated
      (2-D bilinear over the token grid for image models, 1-D linear otherwise; ViT-Lite's
      class-token row is kept as it is).
    - ``classifier.fc.*`` with another class count: dropped, the model keeps its fresh head.
    - Anything else that does not fit is an error listing every missing, unexpected and
      mis-shaped key (with both shapes). With ``strict=False`` missing and unexpected keys
      are tolerated (and listed in the report); mis-shaped ones never are.

    ``source``: file path, state dict, or our checkpoint dict (see :func:`read_state_dict`).
    """
    where = str(source) if isinstance(source, (str, Path)) else "<state dict>"
    model = unwrap_model(model)
    sd = read_state_dict(source)
    target = model.state_dict()
    resized, notes = _adapt_positional_embedding(model, sd, target)
    head_classes = _drop_mismatched_head(sd, target)
    loaded, missing, unexpected = _load_exact(model, sd, target, where, strict, head_classes)
    return LoadReport(where, loaded, resized, head_classes is not None, head_classes, missing,
                      unexpected, tuple(notes))


def _adapt_positional_embedding(
    model: nn.Module, sd: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[_Resized, list[str]]:
    """Phase 1: a positional embedding with another token count is resized in ``sd``."""
    resized: _Resized = {}
    notes: list[str] = []
    value, ours = sd.get(_PE_KEY), target.get(_PE_KEY)
    if (value is not None and ours is not None and value.dim() == 3 and value.shape[0] == 1
            and value.shape[2] == ours.shape[2] and value.shape[1] != ours.shape[1]):
        rows, dim = ours.shape[1], ours.shape[2]
        if _is_sinusoidal(value):
            # A fixed table is a formula of (rows, dim): regenerate it rather than blur it.
            sd[_PE_KEY] = sinusoidal_embedding(rows, dim).to(value.dtype)
        else:
            classifier = model.classifier
            n_prefix = 0 if getattr(classifier, "seq_pool", True) else 1  # class-token row
            sd[_PE_KEY] = resize_positional_embedding(
                value, rows, n_prefix=n_prefix, grid=isinstance(model.tokenizer, ConvTokenizer)
            )
        resized[_PE_KEY] = (tuple(value.shape), tuple(ours.shape))
    pe_param = getattr(getattr(model, "classifier", None), "positional_emb", None)
    if (isinstance(pe_param, torch.Tensor) and not pe_param.requires_grad and _PE_KEY in sd
            and sd[_PE_KEY].shape == pe_param.shape and not _is_sinusoidal(sd[_PE_KEY])):
        # E.g. official *_sine CCT checkpoints, whose embedding was (by an official bug)
        # learned: the values load faithfully, but into our fixed, non-trainable table.
        name = getattr(model, "name", type(model).__name__)
        notes.append(f"{_PE_KEY} holds learned values, not the sine table; they are loaded into "
                     f"{name}'s fixed (non-trainable) embedding")
    return resized, notes


def _drop_mismatched_head(
    sd: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[int, int] | None:
    """Phase 2: a classifier head with another class count is dropped from ``sd``; returns
    (checkpoint classes, model classes) then, else None."""
    w, ours_w = sd.get(_FC_KEYS[0]), target.get(_FC_KEYS[0])
    if (w is not None and ours_w is not None and w.dim() == 2 and w.shape[1] == ours_w.shape[1]
            and w.shape[0] != ours_w.shape[0]):
        bias = sd.get(_FC_KEYS[1])
        if bias is None or tuple(bias.shape) == (w.shape[0],):
            for key in _FC_KEYS:
                sd.pop(key, None)
            return (int(w.shape[0]), int(ours_w.shape[0]))
    return None


def _load_exact(
    model: nn.Module, sd: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], where: str,
    strict: bool, head_classes: tuple[int, int] | None,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Phase 3: everything else must fit exactly; load it. Returns (loaded, missing,
    unexpected) keys."""
    name = getattr(model, "name", type(model).__name__)
    replaced = set(_FC_KEYS) if head_classes else set()
    missing = [k for k in target if k not in sd and k not in replaced]
    unexpected = [k for k in sd if k not in target]
    misshaped = [
        f"{k} (checkpoint {list(sd[k].shape)} vs model {list(target[k].shape)})"
        for k in sd
        if k in target and sd[k].shape != target[k].shape
    ]
    problems = []
    if misshaped:
        problems.append(f"mis-shaped keys: {', '.join(misshaped)}")
    if strict and missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if problems:
        raise CheckpointError(f"checkpoint {where} does not fit {name}: " + "; ".join(problems))

    to_load = {k: v for k, v in sd.items() if k in target}
    result = model.load_state_dict(to_load, strict=False)
    # Module hooks (e.g. the text models' official-table adapter) must not hide anything.
    late = sorted(set(result.missing_keys) - set(missing) - replaced)
    if late or result.unexpected_keys:
        raise CheckpointError(f"checkpoint {where} does not fit {name}: the model refused "
                              f"{', '.join(late + list(result.unexpected_keys))}")
    return tuple(to_load), tuple(missing), tuple(unexpected)
