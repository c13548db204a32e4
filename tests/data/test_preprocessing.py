"""A model library's own preprocessing: normalisation constants and tokenizer encoding."""

from __future__ import annotations

import pytest
import torch

from ablate.config import RunConfig
from ablate.data import load_data
from ablate.data.images import library_normalisation
from ablate.data.text.encoding import TokenizerEncoding
from ablate.exceptions import ConfigError, DataError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "plot", "fun"]


def test_library_normalisation():
    pre = {"mean": (0.2, 0.4, 0.6), "std": (0.1, 0.2, 0.3)}
    assert library_normalisation(None, 3) is None
    assert library_normalisation({"tokenizer": "x"}, 3) is None
    assert library_normalisation(pre, 3) == ((0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    mean, std = library_normalisation(pre, 1)
    assert mean == pytest.approx((0.4,)) and std == pytest.approx((0.2,))
    with pytest.raises(ConfigError, match="--in-chans 3"):
        library_normalisation(pre, 2)


def test_digits_normalised_with_the_models_constants():
    pre = {"img_size": 16, "in_chans": 3, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    bundle = load_data(RunConfig(seed=0), img_size=16, in_chans=3, preprocessing=pre)
    assert bundle.info["norm_source"] == "model"
    x = bundle.val.x[:4]
    expected = (x.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(bundle.eval_transform(x), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tok")
    vocab = {token: i for i, token in enumerate(VOCAB)}
    transformers.BertTokenizerFast(vocab=vocab).save_pretrained(path)
    return path


def test_tokenizer_encoding(tokenizer_dir):
    enc = TokenizerEncoding(str(tokenizer_dir))
    texts = {"train": ["good movie", "bad plot fun fun fun fun"], "val": [""], "test": ["fun"]}
    out = enc(texts, 6)
    assert out.pad_index == 0 and out.embedding_matrix is None and out.vocab is None
    assert out.ids["train"].dtype == torch.int64 and out.ids["train"].shape == (2, 6)
    assert out.ids["train"][0].tolist() == [2, 5, 7, 3, 0, 0]  # [CLS] good movie [SEP] pads
    assert out.ids["train"][1].tolist()[-1] == 3  # cut at 6, still ends with [SEP]
    assert out.lengths["train"].tolist() == [4, 6] and out.lengths["val"].tolist() == [2]


def test_tokenizer_missing_is_one_line(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(DataError, match="--download") as err:
        TokenizerEncoding(str(tmp_path / "nothing-here")).load()
    assert "\n" not in str(err.value)


def test_csv_encoded_with_the_models_tokenizer(tokenizer_dir, tmp_path):
    rows = [("good movie fun", "pos"), ("bad plot", "neg")] * 20
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "\n".join(f"{t},{label}" for t, label in rows) + "\n")
    cfg = RunConfig(dataset=f"csv:{csv}", max_len=8)
    bundle = load_data(cfg, preprocessing={"tokenizer": str(tokenizer_dir)})
    assert bundle.task == "text" and bundle.embedding_matrix is None and bundle.pad_index == 0
    assert bundle.train.x.shape[1] == 8 and bundle.class_names == ["neg", "pos"]
    assert set(bundle.train.x[:, 0].tolist()) == {2}  # every text starts with [CLS]
    assert bundle.info["tokenizer"] == str(tokenizer_dir)
