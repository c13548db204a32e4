"""text_transformer_{2,4,6}: official sizes, parameter counts and keys; variants; padding."""

from __future__ import annotations

import pytest
import torch

import variants
from ablate.exceptions import ConfigError
from ablate.models import create_model, list_models
from ablate.models._registry import model_entry
from ablate.models.compact import sinusoidal_embedding

NAMES = ["text_transformer_2", "text_transformer_4", "text_transformer_6"]
VOCAB, WORD_DIM, PAD, CLASSES = 30, 16, 0, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_rows(table: dict[str, dict]) -> dict[str, dict]:
    """The text_transformer rows of the official table (the ``cct_model_table`` fixture)."""
    return {n.split("(")[0]: r for n, r in table.items() if n.startswith("text_transformer")}


def make(name: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    matrix = torch.randn(VOCAB, WORD_DIM)
    args = dict(num_classes=CLASSES, embedding_matrix=matrix, pad_index=PAD, max_len=24)
    return create_model(name, **{**args, **kwargs})


def batch_ids(lengths: list[int], width: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, VOCAB, (n,), generator=g)
    return ids


def official_keys(layers: int, dim: int, mlp: int, classes: int, vocab: int, rows: int):
    """Keys and shapes of the official model, from its architecture (class token, fixed
    sine table, the official encoder layer's names), in the official order."""
    keys = [("embedder.embeddings.weight", (vocab, dim)), ("classifier.class_emb", (1, 1, dim)),
            ("classifier.positional_emb", (1, rows, dim))]
    for i in range(layers):
        b = f"classifier.blocks.{i}."
        keys += [
            (b + "pre_norm.weight", (dim,)), (b + "pre_norm.bias", (dim,)),
            (b + "self_attn.qkv.weight", (3 * dim, dim)),
            (b + "self_attn.proj.weight", (dim, dim)), (b + "self_attn.proj.bias", (dim,)),
            (b + "linear1.weight", (mlp, dim)), (b + "linear1.bias", (mlp,)),
            (b + "norm1.weight", (dim,)), (b + "norm1.bias", (dim,)),
            (b + "linear2.weight", (dim, mlp)), (b + "linear2.bias", (dim,)),
        ]
    keys += [("classifier.norm.weight", (dim,)), ("classifier.norm.bias", (dim,)),
             ("classifier.fc.weight", (classes, dim)), ("classifier.fc.bias", (classes,))]
    return keys


def test_registered_as_text_models():
    assert list_models("text_transformer_*") == NAMES
    assert all(model_entry(n).task == "text" for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_official_parameter_counts_and_keys(name, cct_model_table):
    row = official_rows(cct_model_table)[name]
    assert row["embedding_dim"] == 300 and not row["conv"] and row["class_token"]
    model = create_model(name, vocab_size=100_000, word_dim=300, num_classes=row["num_classes"])
    words = 100_000 * 300
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable - words == row["n_trainable_excl_word_embedding"]
    assert trainable == row["n_trainable"]
    rows = row["pe_shape"][1]
    surplus = (rows - model.classifier.positional_emb.shape[1]) * 300  # the official extra row
    assert surplus == 300 and total + surplus == row["n_params"]
    expected = official_keys(
        row["num_layers"], 300, row["mlp_hidden"], row["num_classes"], 100_000, rows
    )
    sd = model.state_dict()
    assert sorted(sd) == sorted(k for k, _ in expected)
    for key, shape in expected:
        if key != "classifier.positional_emb":
            assert tuple(sd[key].shape) == shape, key
    assert model.classifier.blocks[0].self_attn.num_heads == row["num_heads"]


def test_official_state_dict_loads_strictly(cct_model_table):
    row = official_rows(cct_model_table)["text_transformer_2"]
    model = make("text_transformer_2", max_len=64)
    rows = row["pe_shape"][1]  # 66: the official one-surplus-row table
    dim = WORD_DIM
    # The official fixed table: a zero row, then sine rows 0..64.
    official_pe = torch.cat([torch.zeros(1, 1, dim), sinusoidal_embedding(rows - 1, dim)], dim=1)
    mlp = int(dim * row["mlp_ratio"])
    keys = official_keys(row["num_layers"], dim, mlp, CLASSES, VOCAB, rows)
    torch.manual_seed(5)
    sd = {k: torch.randn(shape) for k, shape in keys}
    sd["classifier.positional_emb"] = official_pe
    model.load_state_dict(sd, strict=True)
    torch.testing.assert_close(model.classifier.positional_emb, official_pe[:, :65])
    assert torch.isfinite(model.eval()(batch_ids([64, 10], 64))).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spec", variants.list_attention(), ids=lambda s: s.name)
def test_every_variant_forward_backward(name, spec):
    model = make(name, variant=spec.name).train()
    ids = batch_ids([20, 9, 0], 20)
    logits = model(ids)
    assert logits.shape == (3, CLASSES) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    for key, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), key
    assert model.embedder.embeddings.weight.grad[PAD].abs().max() == 0


@pytest.mark.parametrize("variant", ["softmax", "softmax_v", "alpha_remix:alpha=1,beta=1"])
def test_padding_changes_nothing(variant):
    model = make("text_transformer_4", variant=variant).eval()
    ids = batch_ids([13, 7, 1, 0], 13)
    with torch.no_grad():
        ref = model(ids)
        for width in (14, 20, 24):
            padded = torch.nn.functional.pad(ids, (0, width - 13), value=PAD)
            torch.testing.assert_close(model(padded), ref, atol=1e-5, rtol=0)
        # Garbage in padded positions, excluded by an explicit mask.
        garbage = batch_ids([13, 13, 13, 13], 13, seed=9)
        mask = ids != PAD
        noisy = torch.where(mask, ids, garbage)
        torch.testing.assert_close(model(noisy, mask), ref, atol=1e-5, rtol=0)


def test_softmax_v_at_alpha0_is_softmax():
    base = make("text_transformer_2", variant="softmax").eval()
    remix = make("text_transformer_2", variant="softmax_v:alpha=0").eval()
    remix.load_state_dict(base.state_dict())
    ids = batch_ids([11, 4], 12)
    with torch.no_grad():
        torch.testing.assert_close(remix(ids), base(ids), rtol=1e-5, atol=1e-6)


def test_errors():
    with pytest.raises(ConfigError, match="class token"):
        make("text_transformer_2", apply_to="seqpool")
    with pytest.raises(ConfigError, match="multiple of 4"):
        create_model("text_transformer_6", vocab_size=10, word_dim=50)
    with pytest.raises(ConfigError, match="max_len"):
        make("text_transformer_2")(batch_ids([30], 30))
