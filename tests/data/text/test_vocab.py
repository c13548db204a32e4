"""Vocabulary: encoding to padded ids and the vocabulary policy."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.data.glove import PAD_TOKEN, UNK_TOKEN
from ablate.data.text.encoding import Vocabulary, build_vocab


def test_vocabulary_encode_cuts_pads_and_never_leaves_a_row_empty():
    vocab = Vocabulary([PAD_TOKEN, UNK_TOKEN, "a", "b", "c"])
    x = vocab.encode([["a", "b", "c", "a"], ["b"], [], ["zzz", "c"]], max_len=3)
    assert x.dtype == np.int64 and x.shape == (4, 3)
    assert x.tolist() == [[2, 3, 4], [3, 0, 0], [1, 0, 0], [1, 4, 0]]
    assert (x != 0).any(axis=1).all()
    assert vocab.encode([], 5).shape == (0, 5)
    with pytest.raises(ValueError):
        Vocabulary(["a", PAD_TOKEN, UNK_TOKEN])


def test_build_vocab_orders_by_frequency_and_adds_only_pretrained_heldout_words():
    train = [["b", "a", "b"], ["c", "b", "a"], ["rare"]]
    heldout = [["a", "glove1", "glove2", "glove2", "nope"]]
    pretrained = {"a", "b", "c", "glove1", "glove2"}

    def has_vector(tokens):
        return np.array([t in pretrained for t in tokens])

    vocab = build_vocab(train, extra_docs=heldout, has_vector=has_vector)
    assert vocab.tokens == [PAD_TOKEN, UNK_TOKEN, "b", "a", "c", "rare", "glove2", "glove1"]
    assert "nope" not in vocab
    # min_freq drops rare training words without a vector but keeps pretrained ones.
    vocab2 = build_vocab(train + [["glove1"]], has_vector=has_vector, min_freq=2)
    assert vocab2.tokens == [PAD_TOKEN, UNK_TOKEN, "b", "a", "c", "glove1"]
    assert build_vocab(train).tokens == [PAD_TOKEN, UNK_TOKEN, "b", "a", "c", "rare"]
