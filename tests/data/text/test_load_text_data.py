"""load_text_data: splits, encoding and the DataBundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.config import RunConfig
from ablate.data import DataBundle, load_data
from ablate.data.glove import PAD_TOKEN, UNK_TOKEN
from ablate.data.text import SPLIT_SEED, EncodedText, load_text_data
from ablate.exceptions import ConfigError


def _write_ag_news(root: Path, n: int = 60) -> None:
    root.mkdir(parents=True, exist_ok=True)
    topics = ["war peace talks", "football goal match", "stock market profit", "chip software"]
    rows = []
    for i in range(n):
        c = i % 4
        rows.append(f'"{c + 1}","Title {i}","zzqxunknownword{i % 3} news about {topics[c]} '
                    f'number {i}, don\'t miss it."')
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "test.csv").write_text("\n".join(rows[:12]).replace("news", "overlook") + "\n")


def test_load_text_data_builds_the_bundle(tmp_path):
    _write_ag_news(tmp_path / "ag_news")
    cfg = RunConfig(dataset="ag_news", data_dir=str(tmp_path), max_len=12, val_fraction=0.25,
                    quiet=True)
    bundle = load_data(cfg)
    assert isinstance(bundle, DataBundle) and bundle.task == "text"
    assert bundle.num_classes == 4 and bundle.class_names[3] == "Sci/Tech"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45, 15, 12)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.int64 and split.x.shape[1] == 12
        assert split.y.dtype == torch.int64
        assert bool((split.x != 0).any(dim=1).all())
        assert int(split.x.max()) < len(bundle.vocab)
    # Validation is stratified: 15 of 60 with 4 balanced classes.
    assert sorted(torch.bincount(bundle.val.y).tolist()) == [3, 4, 4, 4]
    assert bundle.vocab[:2] == [PAD_TOKEN, UNK_TOKEN] and bundle.pad_index == 0
    emb = bundle.embedding_matrix
    assert emb.shape == (len(bundle.vocab), 50) and emb.dtype == torch.float32
    assert torch.count_nonzero(emb[0]) == 0
    # Training-only unknown words are in the vocabulary (random rows); a test-only word
    # with a GloVe vector joined too, and the encoding uses it.
    assert "zzqxunknownword1" in bundle.vocab and "overlook" in bundle.vocab
    assert bundle.info["vocab_random"] == 3
    assert bundle.info["vocab_size"] == len(bundle.vocab) == emb.shape[0]
    assert bundle.info["test_size"] == 12 and bundle.info["embedding_dim"] == 50
    overlook = bundle.vocab.index("overlook")
    assert bool((bundle.test.x == overlook).any())
    decoded = [bundle.vocab[i] for i in bundle.train.x[0].tolist() if i != 0]
    assert decoded[0] == "title" and decoded[2].startswith("zzqx")
    assert decoded[3:5] == ["news", "about"]
    assert len(decoded) == 12  # cut at max_len

    # Same split and ids with another seed; only the random rows of unknown words change.
    other = load_text_data(cfg.replace(seed=7))
    assert torch.equal(other.val.x, bundle.val.x) and other.vocab == bundle.vocab
    unknown = bundle.vocab.index("zzqxunknownword1")
    assert not torch.allclose(other.embedding_matrix[unknown], emb[unknown])
    known = bundle.vocab.index("football")
    assert torch.equal(other.embedding_matrix[known], emb[known])


def test_load_text_data_single_local_file_gets_test_and_val_held_out(tmp_path):
    path = tmp_path / "all.jsonl"
    labels = ["spam", "ham"]
    with path.open("w") as f:
        for i in range(50):
            f.write(json.dumps({"body": f"message {i} buy now" if i % 2 else f"hi {i}",
                                "kind": labels[i % 2]}) + "\n")
    cfg = RunConfig(dataset=f"jsonl:{path}", text_col="body", label_col="kind", max_len=4,
                    test_fraction=0.2, val_fraction=0.1, quiet=True)
    bundle = load_text_data(cfg)
    assert bundle.class_names == ["ham", "spam"]
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (36, 4, 10)
    assert bundle.train.x.shape == (36, 4)
    assert bundle.info["source"] == f"jsonl:{path}" and bundle.info["split_seed"] == SPLIT_SEED
    with pytest.raises(ConfigError, match="test_fraction"):
        load_text_data(cfg.replace(test_fraction=0.0))
    with pytest.raises(ConfigError, match="max_len"):
        load_text_data(cfg.replace(max_len=0))


def byte_encoding(texts, max_len):
    """A tokenizer with its own vocabulary and no word vectors: UTF-8 bytes + 1, 0 pads."""
    ids, lengths = {}, {}
    for name, part in texts.items():
        rows = [list(t.encode("utf-8")[:max_len]) for t in part]
        x = torch.zeros((len(rows), max_len), dtype=torch.int64)
        for i, row in enumerate(rows):
            x[i, : len(row)] = torch.tensor(row, dtype=torch.int64) + 1
        ids[name] = x
        lengths[name] = np.array([len(r) for r in rows], dtype=np.int64)
    return EncodedText(ids, lengths, pad_index=0, info={"tokenizer": "bytes"})


def test_load_text_data_takes_another_encoding(tmp_path):
    path = tmp_path / "all.csv"
    # Text i starts with its number, so a decoded row says which example it is.
    texts = [f"{i:02d} and some words" if i % 3 else f"{i:02d}" for i in range(40)]
    classes = ["odd" if i % 2 else "even" for i in range(40)]
    path.write_text("text,label\n" + "".join(f"{t},{c}\n" for t, c in zip(texts, classes)))
    cfg = RunConfig(dataset=f"csv:{path}", max_len=8, test_fraction=0.25, quiet=True)
    bundle = load_text_data(cfg, encoding=byte_encoding)
    assert bundle.vocab is None and bundle.embedding_matrix is None and bundle.pad_index == 0
    seen = []
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.shape[1] == 8
        for x, y in zip(split.x.tolist(), split.y.tolist()):
            i = int(bytes(b - 1 for b in x if b).decode()[:2])
            assert bundle.class_names[y] == classes[i]  # ids and labels stay aligned
            seen.append(i)
    assert sorted(seen) == list(range(40))
    info = bundle.info
    assert info["tokenizer"] == "bytes" and "embeddings" not in info
    assert (info["train_size"], info["val_size"], info["test_size"]) == (27, 3, 10)
    lengths = [min(len(t), 8) for t in texts]
    assert info["mean_tokens"] == round(sum(lengths) / 40, 2)
    assert info["full_length_fraction"] == round(sum(n == 8 for n in lengths) / 40, 4)
