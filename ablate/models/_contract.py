"""The model contract, written once: what every builder accepts and what every model exposes.

Every builder registered with :func:`~ablate.models.register_model` (ablate's families and
the ``timm:`` / ``hf:`` adapters alike) takes keyword arguments from :class:`BuilderKwargs`
and returns a :class:`BackboneModel`. Fixed variant parameters are non-persistent buffers,
so ``state_dict()`` holds exactly the weights whatever the variant (official key names for
ablate's families, the library's keys under ``model.`` for external ones); only a trainable
``alpha=learned`` adds its parameters (``...learned_alpha.raw_alpha``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, TypedDict, runtime_checkable

import torch

if TYPE_CHECKING:
    from ablate.models.compact import VariantAttention
    from variants import VariantSpec

__all__ = [
    "BackboneModel", "BuilderKwargs", "VariantSitesMixin", "BUILDER_KWARGS", "builder_args",
    "plain_arch", "variant_arch", "variant_from_kwargs", "check_token_ids",
]


class BuilderKwargs(TypedDict, total=False):
    """The keyword arguments a builder may receive from the trial runner.

    A builder accepts those that make sense for it and raises ``TypeError`` /
    ``ConfigError`` naming any other; ``None`` values are never passed (the model's own
    default stays). Architecture keys of a family (``num_layers``, ``dim``, ...) come from
    its registered ``defaults`` and are not listed here.
    """

    num_classes: int
    variant: "VariantSpec"  # the parsed variant; builders never see the text form
    apply_to: str  # attention | seqpool | both
    dropout: float
    attention_dropout: float
    stochastic_depth: float
    # ablate's own families
    positional_embedding: str
    norm_placement: str
    # image models
    img_size: int
    in_chans: int
    # text models
    max_len: int
    pad_index: int
    vocab_size: int
    word_dim: int
    embedding_matrix: torch.Tensor  # (vocab_size, word_dim)
    freeze_embeddings: bool
    # external (timm: / hf:) models
    pretrained: bool
    download: bool


BUILDER_KWARGS = frozenset(BuilderKwargs.__annotations__)
# How ``arch`` stores the variant (plain data, see variant_arch); never passed to builders.
_ARCH_VARIANT_KEYS = ("variant", "variant_params", "variant_learned")


def builder_args(defaults: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A family's ``defaults`` (its size and the official values) with the caller's
    ``kwargs`` over them; a key the family does not have raises TypeError naming it."""
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(f"{defaults['name']}: unknown argument(s) {', '.join(unknown)}")
    return {**defaults, **kwargs}


def plain_arch(args: Mapping[str, Any]) -> dict[str, Any]:
    """A model's ``arch``: ``args`` as plain data a checkpoint can hold and
    ``create_model(name, **arch)`` rebuilds from (the variant by :func:`variant_arch`;
    tensors and other objects left out)."""

    def plain(v: Any) -> bool:
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, Mapping):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return False

    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in args.items() if plain(v)}
    if "variant" in args:
        out.update(variant_arch(args["variant"]))
    return out


def variant_arch(variant: "VariantSpec") -> dict[str, Any]:
    """The variant as ``arch`` stores it: ``variant`` (its name) and ``variant_params``, plus
    ``variant_learned`` only when alpha is learned (every other arch keeps its format)."""
    out: dict[str, Any] = {"variant": variant.name, "variant_params": dict(variant.params)}
    learned = getattr(variant, "learned", None)
    if learned is not None:
        rng = list(learned.range) if learned.range is not None else None
        out["variant_learned"] = {"shape": learned.shape, "init": learned.init, "range": rng}
    return out


def variant_from_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the variant as one :class:`~variants.VariantSpec` under ``variant``.

    The one place where a variant given as text (``variant="alpha_remix:beta=1"``, as users
    write it) or as a saved ``arch`` (:func:`variant_arch`) becomes a spec; a spec passes
    through (``variant_params`` merged over it).
    """
    if not any(k in kwargs for k in _ARCH_VARIANT_KEYS):
        return kwargs
    from variants import LearnedAlpha, VariantSpec

    out = {k: v for k, v in kwargs.items() if k not in _ARCH_VARIANT_KEYS}
    spec = VariantSpec.coerce(kwargs.get("variant"), kwargs.get("variant_params"))
    learned = kwargs.get("variant_learned")
    if learned:
        rng = learned.get("range")
        options = {**learned, "range": tuple(rng) if rng is not None else None}
        spec = VariantSpec(spec.name, spec.params, LearnedAlpha(**options))
    out["variant"] = spec
    return out


@runtime_checkable
class BackboneModel(Protocol):
    """What the training loop, checkpoints and fine-tuning rely on.

    ``forward(x)``: images (B, C, H, W) or int64 token ids (B, L) -> logits (B, num_classes).
    ``arch``: plain keyword arguments with which ``create_model(name, **arch)`` rebuilds it.
    ``set_variant_params(**values)`` changes e.g. ``alpha`` in place (the same tensors, so
    ``torch.compile`` does not recompile).
    """

    name: str
    arch: dict[str, Any]

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def variant(self) -> str: ...

    def attention_sites(self) -> list["VariantAttention"]: ...

    def variant_param_names(self) -> tuple[str, ...]: ...

    def variant_params(self) -> dict[str, float | None]: ...

    def set_variant_params(self, **values: float) -> None: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Mapping[str, torch.Tensor]: ...


class VariantSitesMixin:
    """The variant part of the contract, from ``attention_sites()`` and ``arch["variant"]``.

    Sites that run another function (plain softmax where ``apply_to`` leaves the variant
    out) are not touched by ``set_variant_params``.
    """

    arch: dict[str, Any]

    def attention_sites(self) -> list["VariantAttention"]:
        raise NotImplementedError

    @property
    def variant(self) -> str:
        return self.arch.get("variant", "softmax")

    def _variant_sites(self) -> list["VariantAttention"]:
        return [s for s in self.attention_sites() if s.variant == self.variant]

    def variant_param_names(self) -> tuple[str, ...]:
        sites = self._variant_sites()
        return sites[0].param_names if sites else ()

    def set_variant_params(self, **values: float) -> None:
        """Set e.g. ``alpha`` on every site that runs the model's variant (in place)."""
        for site in self._variant_sites():
            site.set_params(**values)

    def variant_params(self) -> dict[str, float | None]:
        s = next(iter(self._variant_sites()), None)
        if s is None:
            return {}
        return {n: (None if n in s._none_params else float(getattr(s, n))) for n in s.param_names}


def check_token_ids(name: str, ids: torch.Tensor, max_len: int, fix: str) -> None:
    """A text model's input: integer ids (B, L) with L <= ``max_len`` (else ``fix``, with
    ``{n}`` = L, says how)."""
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} expects integer token ids of shape (batch, length), "
                         f"got {ids.dtype} of shape {tuple(ids.shape)}")
    if ids.shape[1] > max_len:
        from ablate.exceptions import ConfigError

        n = ids.shape[1]
        raise ConfigError(f"{name} takes at most max_len={max_len} tokens but got {n}; "
                          + fix.format(n=n))
