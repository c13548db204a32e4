"""``hf:NAME_OR_DIR``: Hugging Face encoders with every self-attention running an ablate variant.

Text classifiers (BERT, RoBERTa, ... any ``AutoModelForSequenceClassification`` whose
attention goes through Hugging Face's attention-function registry) and image classifiers
(ViT, ... ``AutoModelForImageClassification``). No source is patched: ablate registers one
attention function, ``"ablate"``, with :class:`transformers.AttentionInterface` (and a mask
function of the same name with ``AttentionMaskInterface``) and builds the model with
``attn_implementation="ablate"``. Every self-attention module gets a
:class:`~ablate.models.compact.VariantAttention` site as its submodule ``variant_site``
(non-persistent buffers: the state dict stays the library's), and the registered function,
which Hugging Face calls with the attention module itself, runs that module's site.

Masks. For a bidirectional encoder the ``"ablate"`` mask function hands the 2-D padding mask
(B, Nk), True = real token, straight through: it is ablate's key-padding ``mask``, which
value-side variants need to keep padded tokens out of softmax^T(V). Any other pattern (a
4-D mask passed by the caller, packed sequences) arrives as Hugging Face's boolean 4-D mask
and becomes the additive score ``bias``. Decoders (causal attention) are refused.

Weights are read with ``from_pretrained(..., local_files_only=True)`` unless ``download``;
``pretrained=False`` builds the same architecture from its config with fresh weights (the
"from scratch" arm of a study). ``hf:/path/to/dir`` is any directory ``save_pretrained``
wrote. Preprocessing: text models name their tokenizer (``AutoTokenizer``), image models
pass the image processor's size, mean and std.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import torch
import torch.nn as nn

from ablate.exceptions import ConfigError, first_line
from ablate.models._contract import check_token_ids, plain_arch
from ablate.models._external import (
    SITE,
    ExternalModel,
    block_of,
    check_apply_to,
    mask_as_bias,
    require,
)
from ablate.models._registry import ModelEntry, register_model_source
from ablate.models.compact import VariantAttention
from variants import VariantSpec

__all__ = [
    "HFTextClassifier", "HFImageClassifier", "build_hf_model", "resolve_hf", "inject_hf_attention",
    "ATTN_IMPLEMENTATION",
]

ATTN_IMPLEMENTATION = "ablate"

# Our run options -> the config attributes that mean the same in Hugging Face models.
_DROPOUT_KEYS = {
    "dropout": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
    "stochastic_depth": ("drop_path_rate",),
}


def _transformers() -> Any:
    return require("transformers", "hf")


# -- the registered attention and mask functions -----------------------------------------


def ablate_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Hugging Face attention function: runs the calling ``module``'s variant site.

    (B, H, N, D) query / key / value -> (B, Nq, H, Dv) and no attention weights.
    ``attention_mask``: the (B, Nk) key-padding mask from :func:`ablate_mask`, or a 4-D
    boolean / additive mask (-> score bias), or None.
    """
    site = getattr(module, SITE, None)
    if site is None:
        raise ConfigError(f"{type(module).__name__} called ablate's attention function but has no "
                          "variant site; build Hugging Face models through ablate "
                          "(create_model('hf:...'))")
    if kwargs.get("is_causal"):
        raise ConfigError("ablate's variants run in bidirectional (encoder) attention only")
    if key.shape[1] != query.shape[1]:
        raise ConfigError(f"{type(module).__name__}: grouped key/value heads are not supported by "
                          "ablate")
    mask = bias = None
    if attention_mask is not None and attention_mask.dim() == 2:
        mask = attention_mask.to(torch.bool)  # (B, Nk) key padding, from ablate_mask
    else:
        bias = mask_as_bias(attention_mask, query)
    out = site(query, key, value, mask=mask, bias=bias, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None  # (B, H, N, D) -> (B, N, H, D)


def ablate_mask(
    batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
    mask_function: Any = None, attention_mask: torch.Tensor | None = None, **kwargs: Any,
) -> torch.Tensor | None:
    """Hugging Face mask function: the (B, Nk) padding mask itself for plain encoders."""
    from transformers.masking_utils import bidirectional_mask_function, sdpa_mask

    if mask_function is bidirectional_mask_function and q_length == kv_length:
        return attention_mask  # (B, Nk) bool, True = real token; None without padding
    return sdpa_mask(
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
        kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask, **kwargs,
    )


@functools.lru_cache(maxsize=None)
def _register_interface() -> None:
    transformers = _transformers()
    from transformers.masking_utils import AttentionMaskInterface

    transformers.AttentionInterface.register(ATTN_IMPLEMENTATION, ablate_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, ablate_mask)


def _is_attention(module: nn.Module) -> bool:
    """A module that calls Hugging Face's attention function: it carries ``scaling``."""
    return hasattr(module, "scaling") and hasattr(module, "config")


def inject_hf_attention(model: nn.Module, variant: VariantSpec, *, name: str) -> list[str]:
    """Attach a variant site to every self-attention module of a ``PreTrainedModel`` and
    switch it to ``"ablate"``; return the names of those modules. ConfigError for a model
    that bypasses the attention-function registry, a decoder, or no attention module."""
    _register_interface()
    if not model._can_set_attn_implementation():
        raise ConfigError(f"{name}: {type(model).__name__} does not route its attention through "
                          "Hugging Face's AttentionInterface, so ablate cannot drive it; use a "
                          "model family that does (BERT, RoBERTa, ViT, ...)")
    if getattr(model.config, "is_decoder", False):
        raise ConfigError(f"{name}: a decoder (causal attention); ablate drives encoders only")
    adapted = []
    for mod_name, module in list(model.named_modules()):
        if not _is_attention(module):
            continue
        if getattr(module, "is_causal", False):
            raise ConfigError(f"{name}: {mod_name} is causal; ablate drives encoders only")
        module.add_module(SITE, VariantAttention.of(variant))
        adapted.append(mod_name)
    if not adapted:
        raise ConfigError(f"{name}: no self-attention module with Hugging Face's interface found")
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        raise ConfigError(f"{name}: could not switch its attention to ablate's function")
    return adapted


# -- the wrappers --------------------------------------------------------------------------


class HFTextClassifier(ExternalModel):
    """``forward(ids) -> logits`` for int64 token ids (B, L) padded with ``pad_index``.

    The attention mask Hugging Face expects is derived here, ``ids != pad_index``.
    """

    def __init__(self, model: nn.Module, *, pad_index: int, max_len: int, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.pad_index = pad_index
        self.max_len = max_len

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_token_ids(self.name, ids, self.max_len, "cut the texts (--max-len)")
        if mask is None:
            mask = ids != self.pad_index  # (B, L) True = real token
        return self.model(input_ids=ids, attention_mask=mask.to(torch.long)).logits


class HFImageClassifier(ExternalModel):
    """``forward(x) -> logits`` for normalised images; other sizes than the config's
    ``image_size`` interpolate the position embeddings (Hugging Face's own option)."""

    def __init__(self, model: nn.Module, *, interpolate: bool, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.interpolate = interpolate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolate:
            return self.model(pixel_values=x, interpolate_pos_encoding=True).logits
        return self.model(pixel_values=x).logits


# -- resolving and building ----------------------------------------------------------------


def _missing(name: str, what: str, err: BaseException) -> ConfigError:
    return ConfigError(f"hf:{name}: {what} not found locally ({first_line(err, 200)}); pass "
                       "--download to fetch it from the Hugging Face Hub, or give a directory "
                       "written by save_pretrained (hf:/path/to/dir)")


def _task(config: Any, name: str) -> str:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    if config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image"
    if config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        return "text"
    raise ConfigError(f"hf:{name}: model type {config.model_type!r} has no sequence- or "
                      "image-classification head in transformers; use an encoder such as BERT, "
                      "RoBERTa or ViT")


def _load_config(name: str, download: bool, **overrides: Any) -> tuple[Any, dict]:
    transformers = _transformers()
    try:
        return transformers.AutoConfig.from_pretrained(
            name, local_files_only=not download, return_unused_kwargs=True, **overrides
        )
    except OSError as err:
        raise _missing(name, "its config", err) from None
    except ValueError as err:  # e.g. an unknown model type
        raise ConfigError(f"hf:{name}: {err}") from None


def _image_preprocessing(name: str, config: Any) -> dict[str, Any]:
    size = int(getattr(config, "image_size", 224))
    out: dict[str, Any] = {"img_size": size, "in_chans": int(getattr(config, "num_channels", 3))}
    try:
        from transformers.image_processing_utils import ImageProcessingMixin

        proc, _ = ImageProcessingMixin.get_image_processor_dict(name, local_files_only=True)
    except (OSError, ValueError):
        return out  # no processor config saved: the data loader's own normalisation
    sizes = proc.get("size") or {}
    if isinstance(sizes, Mapping) and "height" in sizes:
        out["img_size"] = int(sizes["height"])
    if proc.get("image_mean") is not None and proc.get("image_std") is not None:
        out["mean"] = tuple(float(m) for m in proc["image_mean"])
        out["std"] = tuple(float(s) for s in proc["image_std"])
    if proc.get("resample") is not None:
        out["resample"] = int(proc["resample"])
    return out


def resolve_hf(name: str, *, download: bool = False) -> ModelEntry:
    """The registry entry for ``hf:NAME_OR_DIR`` (a Hub id or a local directory); reads only
    its config, from the cache unless ``download``."""
    config, _ = _load_config(name, download)
    task = _task(config, name)
    defaults: dict[str, Any] = {"library": "transformers", "model_type": config.model_type}
    if task == "image":
        preprocessing = _image_preprocessing(name, config)
        defaults.update(img_size=preprocessing["img_size"], in_chans=preprocessing["in_chans"])
    else:
        preprocessing = {"tokenizer": name}
        defaults["max_len"] = int(getattr(config, "max_position_embeddings", 512))
    doc = f"Hugging Face {config.model_type} with every self-attention on the chosen variant"
    return ModelEntry(f"hf:{name}", functools.partial(build_hf_model, name), task, defaults, doc,
                      {"preprocessing": preprocessing}, external=True)


def build_hf_model(
    hf_name: str, *, variant: VariantSpec = VariantSpec(), apply_to: str = "attention",
    pretrained: bool = False, download: bool = False, **kwargs: Any,
) -> ExternalModel:
    """Build a Hugging Face classifier (a Hub id or a ``save_pretrained`` directory) with
    every self-attention on ``variant``; ``apply_to`` must be ``attention``.

    ``kwargs``: the rest of :class:`~ablate.models.BuilderKwargs`: ``num_classes`` is
    ``num_labels`` (a pretrained head of another size is re-initialised); ``img_size`` other
    than the config's interpolates the position embeddings, ``in_chans`` must match it; at
    most ``max_position_embeddings`` tokens (``max_len``), ``pad_index`` defaults to the
    config's ``pad_token_id``; the dropouts go to the config's own keys (an error where it
    has none). Anything else: config attributes, or arguments of ``from_pretrained``.
    """
    _register_interface()
    name = f"hf:{hf_name}"
    check_apply_to(apply_to, name)
    arch = plain_arch(dict(kwargs, variant=variant, apply_to=apply_to))
    ours = {k: kwargs.pop(k, None) for k in (
        "num_classes", "img_size", "in_chans", "max_len", "pad_index", *_DROPOUT_KEYS
    )}
    num_classes, img_size, in_chans = ours["num_classes"], ours["img_size"], ours["in_chans"]
    config, _ = _load_config(hf_name, download)
    task = _task(config, hf_name)
    overrides = _config_overrides(name, config, kwargs, {k: ours[k] for k in _DROPOUT_KEYS})
    head_changes = num_classes is not None and num_classes != config.num_labels
    if num_classes is not None:
        overrides["num_labels"] = num_classes
    if task == "image":
        if in_chans is not None and in_chans != config.num_channels:
            raise ConfigError(f"{name} takes {config.num_channels}-channel images, got "
                              f"in_chans={in_chans}")
        if img_size is not None and not pretrained:
            overrides.setdefault("image_size", img_size)  # fresh weights: build at that size
    config, unused = _load_config(hf_name, download, **overrides)
    model = _instantiate(hf_name, task, config, unused, pretrained, download, head_changes)
    adapted = inject_hf_attention(model, variant, name=name)
    blocks = list(dict.fromkeys(block_of(model, a) for a in adapted))
    base = getattr(model, "base_model_prefix", "")
    heads = [
        child for child, module in model.named_children()
        if child != base and any(True for _ in module.parameters())
    ]
    common = dict(name=name, arch=arch, blocks=blocks, heads=heads)
    if task == "image":
        interpolate = img_size is not None and img_size != config.image_size
        return HFImageClassifier(model, interpolate=interpolate, **common)
    limit = int(getattr(config, "max_position_embeddings", 512))
    max_len = ours["max_len"]
    if max_len is not None and max_len > limit:
        raise ConfigError(f"{name} takes at most {limit} tokens (max_position_embeddings); got "
                          f"max_len={max_len}")
    pad = ours["pad_index"]
    pad = getattr(config, "pad_token_id", None) if pad is None else pad
    return HFTextClassifier(model, pad_index=int(pad or 0), max_len=max_len or limit, **common)


def _config_overrides(
    name: str, config: Any, hf_kwargs: Mapping[str, Any], drops: Mapping[str, float | None]
) -> dict[str, Any]:
    """The caller's config overrides plus our dropout options under the config's own keys."""
    overrides = dict(hf_kwargs)
    for ours, value in drops.items():
        if value is None:
            continue
        key = next((k for k in _DROPOUT_KEYS[ours] if hasattr(config, k)), None)
        if key is None:
            if value == 0:
                continue
            raise ConfigError(
                f"{name}: a {config.model_type} model has no {ours.replace('_', ' ')} setting "
                f"({' / '.join(_DROPOUT_KEYS[ours])}); leave --{ours.replace('_', '-')} unset"
            )
        overrides.setdefault(key, value)
    return overrides


def _instantiate(
    hf_name: str, task: str, config: Any, unused: Mapping[str, Any], pretrained: bool,
    download: bool, head_changes: bool,
) -> nn.Module:
    """The library's classifier: pretrained weights (from the cache) or fresh ones."""
    transformers = _transformers()
    auto = getattr(transformers, "AutoModelForImageClassification" if task == "image"
                   else "AutoModelForSequenceClassification")
    try:
        if pretrained:
            return auto.from_pretrained(
                hf_name, config=config, local_files_only=not download,
                ignore_mismatched_sizes=head_changes, **unused,
            )
        return auto.from_config(config, **unused)
    except OSError as err:
        raise _missing(hf_name, "its weights", err) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"hf:{hf_name}: {err}") from None


def _resolve(rest: str, **kwargs: Any) -> ModelEntry:
    return resolve_hf(os.path.expanduser(rest), **kwargs)


register_model_source("hf", _resolve)
