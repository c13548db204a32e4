"""Text CCT / CVT / ViT-Lite backbones: construction, official sizes and keys, padding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ablate.exceptions import ConfigError
from ablate.models import create_model, list_models
from ablate.models._registry import model_entry
from ablate.models.compact import sinusoidal_embedding
from ablate.models.text import TextCompactTransformer

# The conv-tokenizer text models; text_transformer_* have their own tests
# (tests/models/test_text_transformer.py).
TEXT_MODELS = [n for n in list_models("text_*") if not n.startswith("text_transformer")]
VARIANTS = ["softmax", "softmax_v", "alpha_remix:alpha=0.5", "alpha_remix:alpha=1,beta=1"]
VOCAB, WORD_DIM, PAD, CLASSES = 40, 12, 0, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: a second OpenMP thread only spin-waits, which on a busy 2-core machine
    # made this file several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int = 0, **kwargs) -> TextCompactTransformer:
    torch.manual_seed(seed)
    matrix = torch.randn(VOCAB, WORD_DIM) * 0.5
    args = dict(num_classes=CLASSES, embedding_matrix=matrix, pad_index=PAD)
    return create_model(name, **{**args, **kwargs})


def batch_ids(lengths: list[int], width: int, seed: int = 1) -> torch.Tensor:
    """Right-padded ids (B, width): sample b has lengths[b] real (non-pad) ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, VOCAB, (n,), generator=g)
    return ids


def pad_to(ids: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=PAD)


def official_rows(table: dict[str, dict]) -> dict[str, dict]:
    """The text rows of the official table (the ``cct_model_table`` fixture), by bare name."""
    return {n.split("(")[0]: r for n, r in table.items() if n.startswith("text_")}


def official_name(name: str) -> str:
    return name.replace("text_vit_lite_", "text_vit_")


def surplus_rows(name: str) -> int:
    """Positional rows the official table has beyond our token count at 64 words.

    CVT / ViT-Lite: the official one-row surplus. CCT: none, because our tokenizer keeps the
    last conv window over word 63 (needed for padding invariance), which the official
    tokenizer drops, so we make 34 tokens and the official table's 34 rows are all used.
    """
    return 0 if name.startswith("text_cct") else 1


def test_registry_names_and_aliases():
    assert TEXT_MODELS == [f"text_{f}_{n}" for f in ("cct", "cvt", "vit_lite") for n in (2, 4, 6)]
    model = make("text_vit_4")
    assert isinstance(model, TextCompactTransformer) and model.name == "text_vit_lite_4"
    assert model.classifier.seq_pool is False


# -- forward / backward for every model x variant x injection site ----------------------


@pytest.mark.parametrize("apply_to", ["attention", "seqpool", "both"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TEXT_MODELS)
def test_forward_backward(name, variant, apply_to):
    if "vit" in name and apply_to != "attention":
        with pytest.raises(ValueError, match="class token"):
            make(name, variant=variant, apply_to=apply_to)
        return
    model = make(name, variant=variant, apply_to=apply_to).train()
    ids = batch_ids([20, 9, 3], 20)
    logits = model(ids)
    assert logits.shape == (3, CLASSES) and torch.isfinite(logits).all()
    logits.logsumexp(-1).sum().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # The padding row never learns (padding_idx), the used rows do.
    grad = model.embedder.embeddings.weight.grad
    assert grad[PAD].abs().max() == 0
    assert grad[ids[0, 0]].abs().max() > 0


# -- padding invariance -----------------------------------------------------------------


def _invariance_checks(model: TextCompactTransformer) -> None:
    model.eval()
    # The longest text fills the batch: 23 words (no multiple of the patch sizes) and 24
    # (an odd last CCT conv window, so the max-pool's edge matters). The last text is empty.
    for full in (23, 24):
        lengths = [full, 7, 1, 16, 0]
        ids = batch_ids(lengths, full)
        with torch.no_grad():
            ref = model(ids)
            assert torch.isfinite(ref).all()
            for width in (full + 1, full + 2, 40, 64):
                torch.testing.assert_close(model(pad_to(ids, width)), ref, atol=1e-5, rtol=0)
            # Garbage ids in one sample's padding region, excluded by an explicit mask.
            ids64 = pad_to(ids, 64)
            noisy = ids64.clone()
            noisy[1, 7:] = torch.randint(
                1, VOCAB, (57,), generator=torch.Generator().manual_seed(5)
            )
            torch.testing.assert_close(model(noisy, ids64 != PAD), ref, atol=1e-5, rtol=0)
            # A drifted padding row of the (trainable) embedding table: explicit zeroing.
            weight = model.embedder.embeddings.weight
            saved = weight[PAD].clone()
            weight[PAD] = torch.randn(WORD_DIM) * 3.0
            try:
                torch.testing.assert_close(model(ids64), ref, atol=1e-5, rtol=0)
            finally:
                weight[PAD] = saved
            # Brute force: each text alone, only its real tokens, no mask at all.
            tokens, token_mask = model.tokenizer(model.embedder(ids), ids != PAD)
            for b in range(len(lengths)):
                n = int(token_mask[b].sum())
                assert token_mask[b, :n].all()  # right padding -> the real tokens are a prefix
                alone = model.classifier(tokens[b : b + 1, :n])
                torch.testing.assert_close(alone[0], ref[b], atol=1e-5, rtol=0)
            # The comparison is sensitive: ignoring the mask makes padding change the logits.
            unmasked = model(ids, torch.ones_like(ids, dtype=torch.bool))
            unmasked64 = model(ids64, torch.ones_like(ids64, dtype=torch.bool))
            assert (unmasked - unmasked64).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_invariance(name, variant):
    apply_to = "attention" if "vit" in name else "both"
    _invariance_checks(make(name, variant=variant, apply_to=apply_to))


@pytest.mark.parametrize(
    "name,kernel_size,positional_embedding",
    [
        ("text_cct_2", 1, "sine"),
        ("text_cct_2", 2, "learnable"),
        ("text_cct_2", 6, "none"),  # CCT rule gives stride 2 here
        ("text_cvt_2", 1, "learnable"),
        ("text_cvt_2", 2, "sine"),
        ("text_cvt_2", 3, "none"),  # widths not divisible by the patch
        ("text_vit_lite_2", 2, "learnable"),
        ("text_vit_lite_2", 1, "none"),
    ],
)
def test_padding_invariance_kernels_and_positional(name, kernel_size, positional_embedding):
    model = make(
        name,
        kernel_size=kernel_size,
        positional_embedding=positional_embedding,
        variant="alpha_remix:alpha=1,beta=1",
        apply_to="attention" if "vit" in name else "both",
    )
    _invariance_checks(model)


# -- sequence lengths and the token mask ------------------------------------------------


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_full_length_input(name, cct_model_table):
    model = make(name).eval()
    official = official_rows(cct_model_table)[official_name(name)]
    tokens = model.tokenizer.sequence_length(64)
    extra = 0 if model.classifier.seq_pool else 1
    rows = official["pe_shape"][1] - surplus_rows(name)
    assert model.classifier.positional_emb.shape[1] == tokens + extra == rows
    ids = batch_ids([64, 64, 30], 64)
    x, token_mask = model.tokenizer(model.embedder(ids), ids != PAD)
    assert x.shape[1] == token_mask.shape[1] == tokens
    assert token_mask[:2].all()
    with torch.no_grad():
        assert torch.isfinite(model(ids)).all()
    with pytest.raises(ConfigError, match="max_len=64"):
        model(batch_ids([65], 65))


def test_any_length_and_word_dim():
    torch.manual_seed(0)
    model = create_model(
        "text_cct_4", vocab_size=30, word_dim=7, max_len=100, num_classes=2
    ).eval()
    ids = torch.randint(1, 30, (2, 100))
    with torch.no_grad():
        assert model(ids).shape == (2, 2)
        assert model(ids[:, :1]).shape == (2, 2)
        assert torch.isfinite(model(torch.zeros(2, 5, dtype=torch.int64))).all()


def _brute_force_token_mask(
    mask: list[bool], n_conv: int, k: int, s: int, p: int, pool: bool
) -> list[bool]:
    length = len(mask)
    conv = []
    for i in range(n_conv):
        words = range(max(0, i * s - p), min(length, i * s - p + k))
        conv.append(any(mask[j] for j in words))
    if not pool:
        return conv
    n_tokens = (n_conv - 1) // 2 + 1
    return [
        any(conv[i] for i in range(max(0, 2 * t - 1), min(n_conv, 2 * t + 2)))
        for t in range(n_tokens)
    ]


@pytest.mark.parametrize(
    "name,kernel_size",
    [(n, k) for n in ("text_cct_2", "text_cvt_2", "text_vit_lite_2") for k in (1, 2, 3, 4, 6)],
)
def test_token_mask_matches_receptive_fields(name, kernel_size):
    model = make(name, kernel_size=kernel_size)
    tok = model.tokenizer
    k, s, p = tok.kernel, tok.stride, tok.padding
    if name == "text_cct_2":
        assert (s, p) == (max(1, kernel_size // 2 - 1), max(1, kernel_size // 2))
    else:
        assert (s, p) == (kernel_size, 0)
    g = torch.Generator().manual_seed(kernel_size)
    for length in (1, 2, 3, 5, 8, 13, 23, 64):
        # Prefix masks (right padding), random masks (gaps, left padding), all real, none real.
        masks = [torch.arange(length) < n for n in range(length + 1)]
        masks += [torch.rand(length, generator=g) < 0.3 for _ in range(4)]
        mask = torch.stack(masks)  # (M, length)
        x = torch.randn(mask.shape[0], length, WORD_DIM)
        tokens, _ = tok(x, mask)
        n_tokens = tokens.shape[1]
        n_conv = tok.conv_layers[0](torch.zeros(1, 1, tok.padded_length(length), WORD_DIM)).shape[
            2
        ]
        # Every conv window that touches a word exists, so no real word is cut off.
        last_window = (length - 1 + p) // s
        assert n_conv >= last_window + 1
        if tok.max_pool:  # and every pool window over those conv outputs exists too
            assert n_tokens >= (last_window + 1) // 2 + 1
        got = tok.token_mask(mask)
        assert got.shape == (mask.shape[0], n_tokens)
        for row, m in zip(got.tolist(), mask.tolist()):
            assert row == _brute_force_token_mask(m, n_conv, k, s, p, tok.max_pool)


def test_tokens_outside_the_mask_only_see_padding():
    """Changing padded words (before zeroing) never changes any token the mask calls real."""
    model = make("text_cct_2", kernel_size=4)
    tok = model.tokenizer
    mask = torch.arange(20)[None, :] < torch.tensor([[20], [11], [4]])
    x = torch.randn(3, 20, WORD_DIM)
    noisy = torch.where(mask[..., None], x, torch.randn(3, 20, WORD_DIM) * 10)
    a, ma = tok(x, mask)
    b, mb = tok(noisy, mask)
    assert torch.equal(ma, mb)
    assert torch.equal(a[ma], b[mb])


# -- official sizes, keys and parameter counts ------------------------------------------


def test_official_keys_and_embedding_params(cct_keys, cct_model_table):
    torch.manual_seed(0)
    model = create_model("text_cct_2", num_classes=4, vocab_size=100_000, word_dim=300)
    official = dict(cct_keys["text_cct_2"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official  # names and shapes; 34 sine rows, all used by a 64-word input
    row = official_rows(cct_model_table)["text_cct_2"]
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert model.embedder.embeddings.weight.numel() == 30_000_000
    assert n_params == row["n_params"]
    assert n_trainable == row["n_trainable"]  # the sine table is not trainable
    assert n_trainable - 30_000_000 == row["n_trainable_excl_word_embedding"]


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_official_sizes_and_parameter_counts(name, cct_model_table):
    row = official_rows(cct_model_table)[official_name(name)]
    model = create_model(name, num_classes=4, vocab_size=1000, word_dim=300)
    blocks = model.classifier.blocks
    assert len(blocks) == row["num_layers"]
    assert blocks[0].self_attn.num_heads == row["num_heads"]
    assert blocks[0].linear1.weight.shape == (row["mlp_hidden"], row["embedding_dim"])
    conv = model.tokenizer.conv_layers[0]
    spec = row["conv"][0]
    assert list(conv.kernel_size) == spec["k"] and list(conv.stride) == spec["s"]
    assert list(conv.padding) == spec["p"] and conv.bias is None
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    words = 1000 * 300
    pe_surplus = surplus_rows(name) * row["embedding_dim"]
    assert n_params == row["n_params"] - 30_000_000 + words - pe_surplus
    assert n_trainable == row["n_trainable_excl_word_embedding"] + words


def _official_state(name: str, pe_rows: int, dim: int = 128) -> dict[str, torch.Tensor]:
    """An official-layout state dict (random weights, vocab 1000) with a fixed sine table."""
    model = create_model(name, num_classes=4, vocab_size=1000, word_dim=300)
    torch.manual_seed(3)
    state = {k: torch.randn(v.shape) for k, v in model.state_dict().items()}
    state["classifier.positional_emb"] = sinusoidal_embedding(pe_rows, dim)
    return state


def test_official_state_dict_loads_strictly(cct_keys):
    # text_cct_2: exactly the official keys (vocab aside), loads as is.
    official = dict(cct_keys["text_cct_2"])
    state = _official_state("text_cct_2", official["classifier.positional_emb"][1])
    assert {k: list(v.shape) for k, v in state.items() if not k.startswith("embedder")} == {
        k: v for k, v in official.items() if not k.startswith("embedder")
    }
    model = create_model("text_cct_2", num_classes=4, vocab_size=1000, word_dim=300)
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # text_cvt_2 / text_vit_2: the official 17 / 18-row tables lose their surplus row.
    for name, rows in (("text_cvt_2", 17), ("text_vit_lite_2", 18)):
        state = _official_state(name, rows)
        model = create_model(name, num_classes=4, vocab_size=1000, word_dim=300)
        model.load_state_dict(state, strict=True)
        for key, value in state.items():
            expected = value[:, : rows - 1] if key == "classifier.positional_emb" else value
            assert torch.equal(model.state_dict()[key], expected), key
        # Only the one-row surplus is dropped; any other mismatch still fails.
        state["classifier.positional_emb"] = sinusoidal_embedding(rows + 2, 128)
        with pytest.raises(RuntimeError, match="positional_emb"):
            model.load_state_dict(state, strict=True)


# -- embeddings ---------------------------------------------------------------------------


def test_embedding_matrix_initialises_the_table():
    matrix = np.random.default_rng(0).normal(size=(VOCAB, WORD_DIM)).astype(np.float32)
    model = create_model("text_cvt_2", embedding_matrix=matrix, pad_index=2)
    weight = model.embedder.embeddings.weight.detach()
    assert model.arch["vocab_size"] == VOCAB and model.arch["word_dim"] == WORD_DIM
    keep = torch.arange(VOCAB) != 2
    assert torch.equal(weight[keep], torch.from_numpy(matrix)[keep])
    assert weight[2].abs().max() == 0
    assert model.embedder.embeddings.padding_idx == 2


@pytest.mark.parametrize("name", ["text_cct_2", "text_vit_lite_2"])
def test_frozen_embeddings_get_no_gradient(name):
    model = make(name, freeze_embeddings=True).train()
    weight = model.embedder.embeddings.weight
    assert not weight.requires_grad and model.arch["freeze_embeddings"] is True
    model(batch_ids([10, 4], 10)).sum().backward()
    assert weight.grad is None
    assert model.tokenizer.conv_layers[0].weight.grad.abs().max() > 0


# -- arch, variants, errors ---------------------------------------------------------------


def test_arch_rebuilds_the_model_without_the_matrix():
    model = make(
        "text_cct_4", variant="alpha_remix:alpha=1,beta=1", apply_to="both", kernel_size=2
    ).eval()
    arch = model.arch
    json.dumps(arch)  # plain data only: no tensors, no word vectors
    assert arch["variant"] == "alpha_remix" and arch["variant_params"] == {
        "alpha": 1.0,
        "beta": 1.0,
    }
    assert "embedding_matrix" not in arch
    rebuilt = model_entry(arch["name"])(**arch).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    ids = batch_ids([12, 5], 12)
    with torch.no_grad():
        assert torch.equal(rebuilt(ids), model(ids))
    assert rebuilt.arch == arch


def test_set_variant_params_in_place():
    base = make("text_cct_2", apply_to="both").eval()
    model = make("text_cct_2", variant="softmax_v:alpha=0", apply_to="both").eval()
    model.load_state_dict(base.state_dict())
    ids = batch_ids([16, 6, 2], 16)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), base(ids), atol=1e-6, rtol=0)  # alpha 0 = softmax
        model.set_variant_params(alpha=1.0)
        assert model.variant_params() == {"alpha": 1.0}
        assert (model(ids) - base(ids)).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(), ConfigError, "vocab_size and word_dim"),
        (dict(vocab_size=10), ConfigError, "vocab_size and word_dim"),
        (dict(vocab_size=10, word_dim=4, kernel_size=0), ConfigError, "kernel_size"),
        (dict(vocab_size=10, word_dim=4, max_len=0), ConfigError, "max_len"),
        (dict(vocab_size=10, word_dim=4, pad_index=10), ConfigError, "pad_index"),
        (dict(vocab_size=10, embedding_matrix=torch.zeros(9, 4)), ConfigError, "shape"),
        (dict(embedding_matrix=torch.zeros(9)), ConfigError, "2-D"),
        (dict(vocab_size=10, word_dim=4, img_size=32), TypeError, "img_size"),
        (dict(vocab_size=10, word_dim=4, variant="nope"), ValueError, "unknown attention variant"),
        (dict(vocab_size=10, word_dim=4, positional_embedding="rope"), ValueError, "positional"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        create_model("text_cct_2", **kwargs)


def test_bad_input():
    model = make("text_cvt_2")
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.randn(2, 8))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.ones(8, dtype=torch.int64))
