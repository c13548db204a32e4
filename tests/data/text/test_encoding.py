"""The GloVe encoding: tokens cut at max_len, the vocabulary, ids, lengths and the table."""

from __future__ import annotations

import torch

from ablate.config import RunConfig
from ablate.data.glove import PAD_TOKEN, UNK_TOKEN
from ablate.data.text.encoding import EncodedText, GloveEncoding, encoding_for


def test_glove_encoding_of_three_splits():
    texts = {
        "train": ["The movie wasn't great", "zzqxword zzqxword film", ""],
        "val": ["a magnificent film"],
        "test": ["zzqxheldout film film film film film"],
    }
    enc = GloveEncoding(seed=0)(texts, 4)
    assert isinstance(enc, EncodedText) and enc.pad_index == 0
    assert set(enc.ids) == set(enc.lengths) == {"train", "val", "test"}
    assert enc.ids["train"].dtype == torch.int64 and enc.ids["train"].shape == (3, 4)
    # Cut at max_len; an empty text has length 0 but a single <unk> id.
    assert enc.lengths["train"].tolist() == [4, 3, 0] and enc.lengths["test"].tolist() == [4]
    assert enc.ids["train"][2].tolist() == [1, 0, 0, 0]
    vocab = enc.vocab
    assert vocab[:2] == [PAD_TOKEN, UNK_TOKEN]
    decoded = [vocab[i] for i in enc.ids["train"][0].tolist()]
    assert decoded == ["the", "movie", "was", "n't"]
    # Held-out words join only with a GloVe vector: "magnificent" does, "zzqxheldout" not.
    assert "magnificent" in vocab and "zzqxheldout" not in vocab and "zzqxword" in vocab
    assert enc.ids["test"][0, 0].item() == 1  # <unk>
    assert enc.embedding_matrix.shape == (len(vocab), 50)
    assert enc.info == {
        "embeddings": enc.info["embeddings"],
        "embedding_dim": 50,
        "vocab_size": len(vocab),
        "vocab_pretrained": len(vocab) - 3,  # all but <pad>, <unk> and zzqxword
        "vocab_random": 1,
    }


def test_encoding_for_a_run_is_glove_with_its_vectors_and_seed():
    cfg = RunConfig(dataset="ag_news", seed=5, quiet=True)
    assert encoding_for(cfg) == GloveEncoding(None, 5)
