"""Text classification data: ``load_text_data(cfg)``, in data-flow order:

* :mod:`~ablate.data.text.corpora` (named corpora: AG News, TREC, SST-2, IMDb, DBpedia, Yelp
  polarity; readers, sources, checksums) or :mod:`~ablate.data.text.raw` (``csv:PATH`` /
  ``tsv:PATH`` / ``jsonl:PATH``) -> raw texts and labels;
* the fixed train / validation / test split (:func:`~ablate.data.text.raw.split_holdout`);
* :mod:`~ablate.data.text.encoding`: GloVe-style words (:mod:`~ablate.data.text.tokenizer`)
  -> a per-data-set vocabulary -> int64 ids ``(N, max_len)`` padded with 0, or a model
  library's own tokenizer;
* a :class:`~ablate.data.DataBundle` with the data set's embedding table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from ablate.data.bundle import DataBundle, Split
from ablate.data.text.corpora import CORPORA, ensure_corpus
from ablate.data.text.encoding import EncodedText, TextEncoding, encoding_for
from ablate.data.text.raw import LOCAL_FORMATS, SPLIT_SEED, RawCorpus, read_local, split_holdout
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = ["load_text_data", "EncodedText", "TextEncoding", "SPLIT_SEED"]

_SPLITS = ("train", "val", "test")


def _raw_corpus(cfg: "RunConfig") -> RawCorpus:
    if cfg.dataset in CORPORA:
        spec = CORPORA[cfg.dataset]
        return spec.reader(ensure_corpus(spec, cfg.data_dir, download=cfg.download))
    if cfg.dataset.startswith(tuple(f"{fmt}:" for fmt in LOCAL_FORMATS)):
        return read_local(cfg.dataset, cfg.text_col, cfg.label_col)
    raise ConfigError(f"unknown text dataset {cfg.dataset!r}; choose one of {', '.join(CORPORA)}, "
                      "csv:PATH, tsv:PATH or jsonl:PATH")


def load_text_data(
    cfg: "RunConfig", *, encoding: TextEncoding | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load, split and encode ``cfg.dataset``; attach its embedding table. ``encoding``: texts
    -> ids (None: :func:`~ablate.data.text.encoding.encoding_for` the model entry's
    ``preprocessing``)."""
    if cfg.max_len < 1:
        raise ConfigError(f"max_len: must be >= 1, got {cfg.max_len}")
    raw = _raw_corpus(cfg)
    if len(raw.train) == 0:
        raise DataError(f"{raw.source}: the training split is empty")
    train, val, test = raw.train, raw.val, raw.test
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(f"test_fraction: must be in (0, 1) because {raw.source} has no test "
                              f"split, got {cfg.test_fraction}")
        train, test = split_holdout(train, cfg.test_fraction)
    if val is None:
        train, val = split_holdout(train, cfg.val_fraction)
    parts = dict(zip(_SPLITS, (train, val, test)))

    encode = encoding_for(cfg, preprocessing) if encoding is None else encoding
    encoded = encode({name: part.texts for name, part in parts.items()}, cfg.max_len)

    def split(name: str) -> Split:
        labels = np.ascontiguousarray(parts[name].labels, dtype=np.int64)
        return Split(encoded.ids[name], torch.from_numpy(labels))

    lengths = np.concatenate([encoded.lengths[name] for name in _SPLITS])
    info = {
        "source": raw.source, **encoded.info, "train_size": len(train), "val_size": len(val),
        "test_size": len(test), "max_len": cfg.max_len,
        # A full-length example was cut or fits exactly.
        "full_length_fraction": round(float((lengths >= cfg.max_len).mean()), 4),
        "mean_tokens": round(float(lengths.mean()), 2), "split_seed": SPLIT_SEED,
        "test_held_out": raw.test is None,  # test_fraction shaped the test set
    }
    return DataBundle(
        name=cfg.dataset, task="text", train=split("train"), val=split("val"), test=split("test"),
        num_classes=len(raw.class_names), class_names=list(raw.class_names), vocab=encoded.vocab,
        embedding_matrix=encoded.embedding_matrix, pad_index=encoded.pad_index, info=info,
    )
