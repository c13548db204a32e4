"""Hugging Face adapter: small random BERT and ViT classifiers saved locally, every
self-attention running an ablate variant through ``AttentionInterface``.

Nothing is downloaded: the "pretrained" models are random configurations written with
``save_pretrained`` to a temporary directory, tokenizer included.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import variants  # noqa: E402
from ablate.exceptions import ConfigError  # noqa: E402
from ablate.finetune import freeze_parameters, parameter_depth  # noqa: E402
from ablate.models import create_model  # noqa: E402
from ablate.models._registry import model_entry  # noqa: E402
from ablate.models.compact import VariantAttention  # noqa: E402
from ablate.models.hf_models import ATTN_IMPLEMENTATION  # noqa: E402
from ablate.models.lora import apply_lora, merge_lora  # noqa: E402

CLASSES = 3
WORDS = "the a movie film good bad great awful plot actor boring fun".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
VALUE_SIDE = ["softmax_v:alpha=0", "alpha_remix:alpha=0"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_bert(path, seed: int = 0, **config) -> None:
    """A random 2-layer BERT classifier and a word-piece tokenizer for VOCAB, saved to path."""
    path.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(VOCAB)}
    transformers.BertTokenizerFast(vocab=vocab).save_pretrained(path)
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=40, num_labels=CLASSES,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **config,
    )
    transformers.BertForSequenceClassification(cfg).save_pretrained(path)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    save_bert(path)
    return path


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit")
    torch.manual_seed(1)
    cfg = transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, num_labels=CLASSES,
    )
    transformers.ViTForImageClassification(cfg).save_pretrained(path)
    transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
    ).save_pretrained(path)
    return path


def library_model(path, impl: str = "sdpa", image: bool = False):
    auto = (
        transformers.AutoModelForImageClassification
        if image
        else transformers.AutoModelForSequenceClassification
    )
    return auto.from_pretrained(path, attn_implementation=impl).eval()


def token_ids(lengths: list[int], width: int, seed: int = 2) -> torch.Tensor:
    """[CLS] w ... w [SEP] then [PAD]s: sample b has lengths[b] tokens in all."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), width, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, 0], ids[b, n - 1] = 2, 3
        ids[b, 1 : n - 1] = torch.randint(5, len(VOCAB), (n - 2,), generator=g)
    return ids


def ours(path, variant: str = "softmax", **kwargs):
    args = dict(num_classes=CLASSES, variant=variant, pretrained=True)
    return create_model(f"hf:{path}", **{**args, **kwargs})


# -- alpha = 0 is the library's own model -------------------------------------------------


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("variant", ["softmax"] + VALUE_SIDE)
def test_bert_alpha0_reproduces_transformers(bert_dir, variant, impl):
    ref = library_model(bert_dir, impl)
    model = ours(bert_dir, variant).eval()
    assert model.model.config._attn_implementation == ATTN_IMPLEMENTATION
    ids = token_ids([12, 7, 3], 12)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=(ids != 0).long()).logits
        torch.testing.assert_close(model(ids), expected, rtol=1e-5, atol=1e-6)
        if variant != "softmax":
            model.set_variant_params(alpha=1.0)
            assert (model(ids) - expected).abs().max() > 1e-4


@pytest.mark.parametrize("variant", ["softmax"] + VALUE_SIDE)
def test_vit_alpha0_reproduces_transformers(vit_dir, variant):
    ref = library_model(vit_dir, image=True)
    model = ours(vit_dir, variant).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref(pixel_values=x).logits
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
        if variant != "softmax":
            model.set_variant_params(alpha=1.0)
            assert (model(x) - expected).abs().max() > 1e-4


@pytest.mark.parametrize("variant", ["softmax", "softmax_v:alpha=1", "alpha_remix:alpha=1,beta=1"])
def test_bert_padding_changes_nothing(bert_dir, variant):
    model = ours(bert_dir, variant).eval()
    ids = token_ids([9, 5, 2], 9)
    with torch.no_grad():
        ref = model(ids)
        for width in (10, 17, 40):
            padded = torch.nn.functional.pad(ids, (0, width - 9), value=0)
            torch.testing.assert_close(model(padded), ref, rtol=1e-5, atol=1e-6)
        # Each text alone (no padding at all) gives its row of the padded batch.
        for b, n in enumerate([9, 5, 2]):
            alone = model(ids[b : b + 1, :n])
            torch.testing.assert_close(alone, ref[b : b + 1], rtol=1e-5, atol=1e-6)


def test_four_d_mask_becomes_score_bias(bert_dir):
    ref = library_model(bert_dir)
    model = ours(bert_dir, "softmax_v:alpha=0").eval()
    ids = token_ids([8, 8], 8)
    keep = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)) > 0.4
    keep |= torch.eye(8, dtype=torch.bool)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=keep).logits
        got = model.model(input_ids=ids, attention_mask=keep).logits
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert (expected - ref(input_ids=ids).logits).abs().max() > 1e-5  # the mask mattered


# -- every variant, every layer -------------------------------------------------------------


@pytest.mark.parametrize("spec", variants.list_attention(), ids=lambda s: s.name)
def test_every_registered_variant_forward_backward(bert_dir, vit_dir, spec):
    text = ours(bert_dir, spec.name, dropout=0.1, attention_dropout=0.1).train()
    image = ours(vit_dir, spec.name, dropout=0.1, attention_dropout=0.1).train()
    for model, x in (
        (text, token_ids([12, 6, 3], 12)),
        (image, torch.randn(2, 3, 16, 16)),
    ):
        logits = model(x)
        assert torch.isfinite(logits).all()
        logits.logsumexp(-1).sum().backward()
        for key, p in model.named_parameters():
            if key.endswith("token_type_embeddings.weight"):
                continue  # one token type: rows other than 0 get no gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), key


def test_sites_are_buffers_and_keys_are_the_librarys(bert_dir):
    model = ours(bert_dir, "softmax_v:alpha=0.2")
    sites = [m for m in model.modules() if isinstance(m, VariantAttention)]
    assert len(sites) == model.num_blocks == 2
    assert model.variant_params() == pytest.approx({"alpha": 0.2})
    model.set_variant_params(alpha=0.6)
    assert all(float(s.alpha) == pytest.approx(0.6) for s in sites)
    assert list(model.model.state_dict()) == list(library_model(bert_dir).state_dict())


def test_from_scratch_and_other_head(bert_dir):
    ref = library_model(bert_dir)
    fresh = create_model(f"hf:{bert_dir}", num_classes=CLASSES, pretrained=False)
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(fresh.model.state_dict()[w], ref.state_dict()[w])
    five = create_model(f"hf:{bert_dir}", num_classes=5, pretrained=True)
    assert torch.equal(five.model.state_dict()[w], ref.state_dict()[w])
    assert five.model.classifier.out_features == 5


# -- errors, entries, offline ----------------------------------------------------------------


def test_errors_are_one_clear_line(bert_dir, tmp_path):
    with pytest.raises(ConfigError, match="apply_to='attention'"):
        ours(bert_dir, apply_to="both")
    with pytest.raises(ConfigError, match="no stochastic depth"):
        ours(bert_dir, stochastic_depth=0.1)
    ours(bert_dir, stochastic_depth=0.0)  # nothing to turn off: fine
    with pytest.raises(ConfigError, match="--download") as err:
        model_entry("hf:ablate-tests/no-such-model")
    assert "\n" not in str(err.value)
    decoder = tmp_path / "decoder"
    save_bert(decoder, is_decoder=True)
    with pytest.raises(ConfigError, match="encoders only"):
        ours(decoder)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        ours(bert_dir, max_len=64)


def test_entries_carry_preprocessing(bert_dir, vit_dir):
    text = model_entry(f"hf:{bert_dir}")
    assert text.task == "text" and text.extras["preprocessing"] == {"tokenizer": str(bert_dir)}
    image = model_entry(f"hf:{vit_dir}")
    pre = image.extras["preprocessing"]
    assert image.task == "image" and image.img_size == 16
    assert pre["mean"] == pytest.approx((0.4, 0.5, 0.6)) and pre["std"][2] == pytest.approx(0.3)


def test_vit_other_resolution_interpolates(vit_dir):
    model = ours(vit_dir, "softmax_v:alpha=0", img_size=24).eval()
    assert model(torch.randn(2, 3, 24, 24)).shape == (2, CLASSES)


# -- fine-tuning protocol -------------------------------------------------------------------


def test_stages_freeze_and_lora(bert_dir):
    model = ours(bert_dir, "softmax_v:alpha=0").eval()
    n = model.num_blocks
    depth = {k: parameter_depth(k, n, model) for k, _ in model.named_parameters()}
    assert depth["model.bert.embeddings.word_embeddings.weight"] == 0
    assert depth["model.bert.encoder.layer.1.output.dense.bias"] == 2
    assert depth["model.bert.pooler.dense.weight"] == depth["model.classifier.weight"] == n + 1
    ids = token_ids([10, 4], 10)
    with torch.no_grad():
        before = model(ids)
    wrapped = apply_lora(model, rank=2, alpha=2.0)
    assert len(wrapped) == 6 * n  # query, key, value, attention out, intermediate, out
    with torch.no_grad():
        torch.testing.assert_close(model(ids), before)  # B = 0: exactly the source
        for m in model.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.normal_()
        adapted = model(ids)
        torch.testing.assert_close(merge_lora(model)(ids), adapted, rtol=1e-5, atol=1e-5)
    model = ours(bert_dir)
    freeze_parameters(model, "encoder")
    assert [k for k, p in model.named_parameters() if p.requires_grad] == [
        "model.classifier.weight", "model.classifier.bias"
    ]


def test_missing_extra_says_how_to_install(monkeypatch, bert_dir):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[hf\]"'):
        create_model(f"hf:{bert_dir}")
