"""Text classification data: ``load_text_data(cfg)`` and the pieces it is built from.

Pipeline: raw texts + labels (a named corpus or a local csv/tsv/jsonl) -> fixed train /
validation / test split -> an encoding (GloVe-style words -> a per-data-set vocabulary ->
int64 ids ``(N, max_len)`` padded with 0, by default) -> :class:`~ablate.data.DataBundle`
with the data set's embedding table.

Modules, in data-flow order:

* :mod:`~ablate.data.text.corpora` -- named corpora (AG News, TREC, SST-2, IMDb, DBpedia,
  Yelp polarity): readers, download URLs and checksums, :func:`ensure_corpus`.
* :mod:`~ablate.data.text.local` -- ``csv:PATH`` / ``tsv:PATH`` / ``jsonl:PATH``.
* :mod:`~ablate.data.text.raw` -- :class:`RawText` / :class:`RawCorpus` and the fixed
  hold-out split (:func:`split_holdout`, :data:`SPLIT_SEED`).
* :mod:`~ablate.data.text.encoding` -- the encoding seam (:class:`TextEncoding`) and the
  GloVe default (:class:`GloveEncoding`), built on
* :mod:`~ablate.data.text.tokenizer` (GloVe-6B / PTB-style words) and
  :mod:`~ablate.data.text.vocab` (:class:`Vocabulary`, :func:`build_vocab`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from ablate.data.bundle import DataBundle, Split
from ablate.data.text.corpora import (
    CORPORA,
    CorpusSpec,
    RemoteFile,
    ensure_corpus,
    read_ag_news,
    read_dbpedia,
    read_imdb,
    read_sst2,
    read_trec,
    read_yelp_polarity,
)
from ablate.data.text.encoding import EncodedText, GloveEncoding, TextEncoding, encoding_for
from ablate.data.text.local import LOCAL_FORMATS, read_local
from ablate.data.text.raw import SPLIT_SEED, RawCorpus, RawText, split_holdout
from ablate.data.text.tokenizer import tokenize, tokenize_batch
from ablate.data.text.vocab import Vocabulary, build_vocab
from ablate.exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from ablate.config import RunConfig

__all__ = [
    "tokenize",
    "tokenize_batch",
    "Vocabulary",
    "build_vocab",
    "RawText",
    "RawCorpus",
    "RemoteFile",
    "CorpusSpec",
    "CORPORA",
    "SPLIT_SEED",
    "read_ag_news",
    "read_dbpedia",
    "read_yelp_polarity",
    "read_trec",
    "read_sst2",
    "read_imdb",
    "read_local",
    "ensure_corpus",
    "split_holdout",
    "EncodedText",
    "TextEncoding",
    "GloveEncoding",
    "encoding_for",
    "load_text_data",
]

_SPLITS = ("train", "val", "test")


def _raw_corpus(cfg: "RunConfig") -> RawCorpus:
    if cfg.dataset in CORPORA:
        spec = CORPORA[cfg.dataset]
        root = ensure_corpus(spec, cfg.data_dir, download=cfg.download, progress=not cfg.quiet)
        return spec.reader(root)
    if cfg.dataset.startswith(tuple(f"{fmt}:" for fmt in LOCAL_FORMATS)):
        return read_local(cfg.dataset, cfg.text_col, cfg.label_col)
    raise ConfigError(
        f"unknown text dataset {cfg.dataset!r}; choose one of {', '.join(CORPORA)}, "
        "csv:PATH, tsv:PATH or jsonl:PATH"
    )


def load_text_data(
    cfg: "RunConfig",
    *,
    encoding: TextEncoding | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load, split and encode ``cfg.dataset``; attach its embedding table.

    Args:
        cfg: uses dataset, data_dir, download, text_col, label_col, max_len, val_fraction,
            test_fraction and quiet, plus what the encoding reads (embeddings, seed).
        encoding: texts -> ids; None = the model library's tokenizer named by
            ``preprocessing`` if any, else :func:`encoding_for(cfg) <encoding_for>`.
        preprocessing: the model entry's ``extras["preprocessing"]`` (timm: / hf: models).
    """
    if cfg.max_len < 1:
        raise ConfigError(f"max_len: must be >= 1, got {cfg.max_len}")
    raw = _raw_corpus(cfg)
    if len(raw.train) == 0:
        raise DataError(f"{raw.source}: the training split is empty")
    train, val, test = raw.train, raw.val, raw.test
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ConfigError(
                f"test_fraction: must be in (0, 1) because {raw.source} has no test split, "
                f"got {cfg.test_fraction}"
            )
        train, test = split_holdout(train, cfg.test_fraction)
    if val is None:
        train, val = split_holdout(train, cfg.val_fraction)
    parts = dict(zip(_SPLITS, (train, val, test)))

    if encoding is None:
        # A timm: / hf: model's own tokenizer (preprocessing={"tokenizer": ...}), else GloVe.
        from ablate.data.preprocessing import encoding_from_preprocessing

        encoding = encoding_from_preprocessing(preprocessing, cfg.download)
    encode = encoding_for(cfg) if encoding is None else encoding
    encoded = encode({name: part.texts for name, part in parts.items()}, cfg.max_len)

    def split(name: str) -> Split:
        labels = np.ascontiguousarray(parts[name].labels, dtype=np.int64)
        return Split(encoded.ids[name], torch.from_numpy(labels))

    lengths = np.concatenate([encoded.lengths[name] for name in _SPLITS])
    info = {
        "source": raw.source,
        **encoded.info,
        "train_size": len(train),
        "val_size": len(val),
        "test_size": len(test),
        "max_len": cfg.max_len,
        # A full-length example was cut or fits exactly.
        "full_length_fraction": round(float((lengths >= cfg.max_len).mean()), 4),
        "mean_tokens": round(float(lengths.mean()), 2),
        "split_seed": SPLIT_SEED,
    }
    return DataBundle(
        name=cfg.dataset,
        task="text",
        train=split("train"),
        val=split("val"),
        test=split("test"),
        num_classes=len(raw.class_names),
        class_names=list(raw.class_names),
        vocab=encoded.vocab,
        embedding_matrix=encoded.embedding_matrix,
        pad_index=encoded.pad_index,
        info=info,
    )
