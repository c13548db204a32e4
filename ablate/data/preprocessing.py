"""A model library's own input pipeline, for ``timm:`` / ``hf:`` models.

The registry entry of such a model carries ``extras["preprocessing"]`` (see
:mod:`ablate.models.timm_models`, :mod:`ablate.models.hf_models`); the data loaders use it
instead of ablate's defaults:

- images: ``{"img_size", "in_chans", "mean", "std", ...}`` from timm's pretrained data config
  or the Hugging Face image processor: :func:`library_normalisation` gives the constants the
  pretrained weights were trained with (ablate otherwise uses the data set's own);
- text: ``{"tokenizer": NAME_OR_DIR}``: :class:`TokenizerEncoding` encodes the texts with
  ``AutoTokenizer`` (the model's own word pieces, special tokens and padding id) instead of
  GloVe words; the model brings its own embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ablate.exceptions import ConfigError, DataError

__all__ = ["TokenizerEncoding", "library_normalisation", "encoding_from_preprocessing"]


def library_normalisation(
    preprocessing: Mapping[str, Any] | None, in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` per channel from a model library's preprocessing, or None.

    Args:
        preprocessing: the model entry's ``extras["preprocessing"]`` (None: ablate's model).
        in_chans: channels of the stored images; a 3-channel library constant is averaged
            for 1-channel images (the weights' first layer was adapted the same way).

    Raises:
        ConfigError: constants whose length matches neither the images nor 3 channels.
    """
    if not preprocessing or preprocessing.get("mean") is None or preprocessing.get("std") is None:
        return None
    mean = tuple(float(m) for m in preprocessing["mean"])
    std = tuple(float(s) for s in preprocessing["std"])
    if len(mean) != len(std):
        raise ConfigError(f"preprocessing: mean {mean} and std {std} differ in length")
    if len(mean) == in_chans:
        return mean, std
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise ConfigError(
        f"preprocessing: the model normalises {len(mean)} channels but the images have "
        f"{in_chans}; pass --in-chans {len(mean)}"
    )


@dataclass(frozen=True)
class TokenizerEncoding:
    """Texts -> ids with a Hugging Face tokenizer (``AutoTokenizer``), padded to ``max_len``.

    A :class:`~ablate.data.text.encoding.TextEncoding`: the same splits in, padded int64
    ids ``(N, max_len)`` out, with the tokenizer's own special tokens (``[CLS] ... [SEP]``)
    and its ``pad_token_id`` as ``pad_index``; no vocabulary or embedding table (the model
    has its own).

    Args:
        tokenizer: a Hub id or a local directory holding the tokenizer files.
        download: fetch the tokenizer when it is not in the local cache.
    """

    tokenizer: str
    download: bool = False

    def load(self) -> Any:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ConfigError(
                'hf:... models need the optional package transformers; install it with '
                'pip install -e ".[hf]"'
            ) from None
        try:
            tok = AutoTokenizer.from_pretrained(self.tokenizer, local_files_only=not self.download)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise DataError(
                f"tokenizer {self.tokenizer!r} not found locally ({first}); pass --download to "
                "fetch it, or save it next to the model (tokenizer.save_pretrained(DIR))"
            ) from None
        if tok.pad_token_id is None:
            raise DataError(
                f"tokenizer {self.tokenizer!r} has no padding token; batches of texts need one"
            )
        return tok

    def __call__(self, texts: Mapping[str, Sequence[str]], max_len: int) -> Any:
        from ablate.data.text.encoding import EncodedText

        tok = self.load()
        ids: dict[str, torch.Tensor] = {}
        lengths: dict[str, np.ndarray] = {}
        for split, part in texts.items():
            enc = tok(
                list(part), truncation=True, max_length=max_len, padding="max_length",
                return_attention_mask=True, return_tensors="np",
            )
            ids[split] = torch.from_numpy(np.asarray(enc["input_ids"], dtype=np.int64))
            lengths[split] = np.asarray(enc["attention_mask"], dtype=np.int64).sum(axis=1)
        return EncodedText(
            ids=ids,
            lengths=lengths,
            pad_index=int(tok.pad_token_id),
            info={"tokenizer": self.tokenizer, "vocab_size": len(tok)},
        )


def encoding_from_preprocessing(
    preprocessing: Mapping[str, Any] | None, download: bool = False
) -> TokenizerEncoding | None:
    """The text encoding a model library asks for (``{"tokenizer": ...}``), or None."""
    name = (preprocessing or {}).get("tokenizer")
    return TokenizerEncoding(str(name), download) if name else None
