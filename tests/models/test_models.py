"""Backbones: official sizes and parameter counts, forward/backward, injection sites,
positional embeddings, input shapes, and variant parameters under torch.compile."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate.models import VariantAttention, create_model, list_models

IMAGE_MODELS = [n for n in list_models() if not n.startswith("text_")]
VARIANTS = ["softmax", "softmax_v", "alpha_remix"]
APPLY_TO = ["attention", "seqpool", "both"]


def official_name(name: str) -> str:
    """Our registry name -> the official one (ViT-Lite is ``vit_*`` officially)."""
    return "vit_" + name[len("vit_lite_") :] if name.startswith("vit_lite_") else name


def n_params(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Same weights in another configuration (strict: the key sets must agree)."""
    dst.load_state_dict(src.state_dict(), strict=True)


def images(batch: int = 2, chans: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------
# names, sizes, parameter counts


def test_every_official_image_name_is_registered(cct_model_table):
    # The registry may hold more (new backbones); the exact parameter count of every
    # official name is checked by the test below.
    official = {n for n in cct_model_table if not n.startswith("text_")}
    assert official <= {official_name(n) for n in IMAGE_MODELS}
    # The official ViT names are accepted as aliases of ours.
    aliases = set(list_models(include_aliases=True)) - set(list_models())
    assert {n for n in official if n.startswith("vit_")} <= aliases
    assert create_model("vit_2_4_32").name == "vit_lite_2_4_32"
    assert all(n.startswith("text_") for n in set(list_models()) - set(IMAGE_MODELS))


def test_parameter_counts_and_shapes_match_official_table(official_image_model, cct_model_table):
    row = cct_model_table[official_image_model]
    model = create_model(official_image_model)  # build through the official name
    assert official_name(model.name) == official_image_model
    assert n_params(model) == row["n_params"]

    pe = model.classifier.positional_emb
    assert list(pe.shape) == row["pe_shape"]
    pe_size = math.prod(row["pe_shape"])
    if row["pe_requested_default"] == "sine" and row["pe_actual"] == "learnable":
        # The official bug: a requested sine table silently became learnable there.
        assert row["n_trainable"] == row["n_params"]
        assert not pe.requires_grad
        assert n_params(model, trainable=True) == row["n_params"] - pe_size
    else:
        assert n_params(model, trainable=True) == row["n_trainable"]
        assert pe.requires_grad == (row["pe_actual"] == "learnable")

    cls = model.classifier
    assert len(cls.blocks) == row["num_layers"]
    assert cls.blocks[0].self_attn.num_heads == row["num_heads"]
    assert cls.norm.normalized_shape == (row["embedding_dim"],)
    assert cls.blocks[0].linear1.out_features == row["mlp_hidden"]
    assert cls.fc.out_features == row["num_classes"]
    assert cls.seq_pool == row["seq_pool"] and hasattr(cls, "class_emb") == row["class_token"]
    convs = [m for m in model.tokenizer.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == row["n_conv_layers"] == len(row["conv"])
    for conv, spec in zip(convs, row["conv"]):
        assert list(conv.kernel_size) == spec["k"]
        assert list(conv.stride) == spec["s"]
        assert list(conv.padding) == spec["p"]
        assert (conv.bias is not None) == spec["bias"]
        assert conv.out_channels == spec["out"]
    assert model.arch["img_size"] == row["img_size"]


# ---------------------------------------------------------------------------------------
# forward / backward


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    size, classes = model.arch["img_size"], model.arch["num_classes"]
    if size > 32 and name.startswith("cct_14"):
        # 22M parameters at 224/384 px: one inference forward keeps the suite fast.
        with torch.inference_mode():
            out = model.eval()(images(1, size=size))
        assert out.shape == (1, classes) and torch.isfinite(out).all()
        return
    batch = 1 if size > 32 else 2
    out = model.train()(images(batch, size=size))
    assert out.shape == (batch, classes) and torch.isfinite(out).all()
    loss = nn.functional.cross_entropy(out, torch.arange(batch) % classes)
    loss.backward()
    for key, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), key
    # Gradient reaches the tokenizer through every layer.
    assert model.tokenizer.conv_layers[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("apply_to", APPLY_TO)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["cct_2_3x2_32", "cvt_2_4_32"])
def test_every_variant_at_every_site(name, variant, apply_to):
    torch.manual_seed(0)
    model = create_model(name, variant=variant, apply_to=apply_to)
    sites = model.classifier.attention_sites()
    layers = len(model.classifier.blocks)
    expected = {"attention": layers, "seqpool": 1, "both": layers + 1}[apply_to]
    assert len(sites) == layers + 1  # every layer + the pooling
    if variant != "softmax":
        assert sum(s.variant == variant for s in sites) == expected
        assert model.classifier.pool_core.variant == (
            variant if apply_to != "attention" else "softmax"
        )
        assert all(
            b.self_attn.core.variant == (variant if apply_to != "seqpool" else "softmax")
            for b in model.classifier.blocks
        )

    x = images(3)
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)

    # The variant really acts there: same weights with plain softmax give other logits.
    baseline = create_model(name, apply_to=apply_to).eval()
    copy_weights(model, baseline)
    model.eval()
    with torch.no_grad():
        same = torch.allclose(model(x), baseline(x), atol=1e-5)
    assert same == (variant == "softmax")


@pytest.mark.parametrize("apply_to", ["seqpool", "both"])
def test_vit_lite_has_no_sequence_pooling(apply_to):
    with pytest.raises(ValueError, match="class token") as info:
        create_model("vit_lite_2_4_32", variant="softmax_v", apply_to=apply_to)
    assert "\n" not in str(info.value)


def test_bad_architecture_options_are_refused():
    with pytest.raises(ValueError, match="apply_to"):
        create_model("cct_2_3x2_32", apply_to="everywhere")
    with pytest.raises(ValueError, match="positional_embedding"):
        create_model("cct_2_3x2_32", positional_embedding="rotary")
    with pytest.raises(ValueError, match="norm_placement"):
        create_model("cct_2_3x2_32", norm_placement="post")
    with pytest.raises(ValueError, match="unknown model 'cct_3'.*cct_2_3x2_32"):
        create_model("cct_3")


# ---------------------------------------------------------------------------------------
# positional embeddings


def official_sine_table(rows: int, dim: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), written out."""
    table = [[0.0] * dim for _ in range(rows)]
    for p in range(rows):
        for j in range(dim):
            angle = p / 10000 ** (2 * (j // 2) / dim)
            table[p][j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return torch.tensor(table, dtype=torch.float64).unsqueeze(0)


@pytest.mark.parametrize("name", ["cct_2_3x2_32", "vit_lite_2_4_32"])
def test_positional_embedding_kinds_really_differ(name):
    torch.manual_seed(0)
    models = {
        kind: create_model(name, positional_embedding=kind)
        for kind in ("learnable", "sine", "none")
    }
    learnable, sine, none = models["learnable"], models["sine"], models["none"]
    rows = learnable.classifier.positional_emb.shape[1]
    dim = learnable.classifier.norm.normalized_shape[0]

    assert learnable.classifier.positional_emb.requires_grad
    assert none.classifier.positional_emb is None
    assert "classifier.positional_emb" not in none.state_dict()
    assert n_params(none) == n_params(learnable) - rows * dim

    pe = sine.classifier.positional_emb
    assert not pe.requires_grad
    assert "classifier.positional_emb" in sine.state_dict()  # like the official fixed table
    assert all(p is not pe for p in sine.parameters() if p.requires_grad)
    torch.testing.assert_close(pe.double(), official_sine_table(rows, dim), rtol=0, atol=1e-6)

    # Same weights everywhere else: three different functions.
    shared = {k: v for k, v in learnable.state_dict().items() if k != "classifier.positional_emb"}
    for model in (sine, none):
        missing, unexpected = model.load_state_dict(shared, strict=False)
        assert not unexpected and set(missing) <= {"classifier.positional_emb"}
    x = images(2)
    with torch.no_grad():
        outs = {k: m.eval()(x) for k, m in models.items()}
    for a, b in (("learnable", "sine"), ("learnable", "none"), ("sine", "none")):
        assert not torch.allclose(outs[a], outs[b], atol=1e-4), f"{a} and {b} gave the same logits"

    # Training moves the learnable table and leaves the sine one alone.
    for model in (learnable, sine):
        model.train()
        before = model.classifier.positional_emb.detach().clone()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        model(x).logsumexp(dim=1).mean().backward()
        opt.step()
        moved = not torch.equal(before, model.classifier.positional_emb.detach())
        assert moved == (model is learnable)


# ---------------------------------------------------------------------------------------
# input shapes


def test_grayscale_input(cct_model_table):
    model = create_model("cct_7_3x1_32", in_chans=1, num_classes=10)
    assert model.tokenizer.conv_layers[0][0].weight.shape == (256, 1, 3, 3)
    assert n_params(model) == cct_model_table["cct_7_3x1_32"]["n_params"] - 2 * 3 * 3 * 256
    out = model(images(2, chans=1))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(RuntimeError):
        model(images(2, chans=3))


@pytest.mark.parametrize(
    ("name", "size", "rows"),
    [
        ("cct_2_3x2_32", 64, 16 * 16),  # each conv keeps the size, each max-pool halves it
        ("cct_2_3x2_32", 28, 7 * 7),  # 28 -> 14 -> 7 (MNIST-sized)
        ("cct_7_3x1_32", 16, 8 * 8),
        ("cvt_2_4_32", 48, 12 * 12),
        ("vit_lite_2_4_32", 16, 4 * 4 + 1),  # + class token
    ],
)
def test_other_image_sizes(name, size, rows):
    model = create_model(name, img_size=size)
    assert model.classifier.positional_emb.shape[1] == rows
    out = model(images(2, size=size))
    out.sum().backward()
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="img_size") as info:
        model(images(1, size=32))
    assert "\n" not in str(info.value)


def test_no_positional_embedding_accepts_any_size():
    model = create_model("cvt_2_4_32", positional_embedding="none").eval()
    for size in (16, 32, 40):
        assert model(images(1, size=size)).shape == (1, 10)


# ---------------------------------------------------------------------------------------
# variant parameters: in place, no rebuild, no recompile


def test_set_variant_params_changes_outputs_in_place():
    torch.manual_seed(0)
    model = create_model(
        "cct_2_3x2_32", variant="softmax_v", variant_params={"alpha": 0.0}, apply_to="both"
    ).eval()
    baseline = create_model("cct_2_3x2_32", apply_to="both").eval()
    copy_weights(model, baseline)
    x = images(2)
    buffers = [s.alpha for s in model.classifier.attention_sites()]
    with torch.no_grad():
        torch.testing.assert_close(model(x), baseline(x))  # alpha = 0 is standard attention
        model.set_variant_params(alpha=1.0)
        out1 = model(x)
    assert model.variant_params() == {"alpha": 1.0}
    assert [s.alpha for s in model.classifier.attention_sites()] == buffers  # same tensors
    assert all(float(b) == 1.0 for b in buffers)
    assert not torch.allclose(out1, baseline(x), atol=1e-4)
    fresh = create_model("cct_2_3x2_32", variant="softmax_v", apply_to="both").eval()  # alpha 1
    copy_weights(model, fresh)
    with torch.no_grad():
        torch.testing.assert_close(out1, fresh(x))
    # Variant parameters are not weights: never in the state dict.
    assert not any(k.endswith(".alpha") for k in model.state_dict())

    with pytest.raises(ValueError, match="no parameter 'gamma'"):
        model.set_variant_params(gamma=1.0)

    # alpha_remix: beta starts derived (None) and can be set explicitly later.
    remix = create_model("cct_2_3x2_32", variant="alpha_remix:alpha=1").eval()
    copy_weights(model, remix)
    assert remix.variant_params() == {"alpha": 1.0, "beta": None}
    with torch.no_grad():
        pure = remix(x)
        remix.set_variant_params(beta=1.0)  # V + softmax^T(V)
        mixed = remix(x)
    assert remix.variant_params() == {"alpha": 1.0, "beta": 1.0}
    assert not torch.allclose(pure, mixed, atol=1e-4)


def test_variant_params_under_torch_compile_do_not_recompile():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(
        "cct_2_3x2_32", variant="softmax_v", variant_params={"alpha": 0.2}, apply_to="both"
    ).eval()
    reference = create_model("cct_2_3x2_32", variant="softmax_v", apply_to="both").eval()
    copy_weights(model, reference)
    counter = CompileCounter()  # a backend that counts compiled frames, then runs them eagerly
    compiled = torch.compile(model, backend=counter)
    x = images(2)
    with torch.no_grad():
        outs = {}
        for alpha in (0.2, 0.7, 1.0):
            model.set_variant_params(alpha=alpha)
            reference.set_variant_params(alpha=alpha)
            outs[alpha] = compiled(x)
            # Not a stale constant: the compiled graph follows the buffer.
            torch.testing.assert_close(outs[alpha], reference(x))
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames for 3 alpha values"
    assert not torch.allclose(outs[0.2], outs[0.7], atol=1e-4)
    torch._dynamo.reset()


def test_attention_dropout_is_active_in_train_mode_only():
    model = create_model(
        "cct_2_3x2_32", variant="softmax_v", attention_dropout=0.5, stochastic_depth=0.0
    )
    x = images(2)
    with torch.no_grad():
        a, b = model.train()(x), model(x)
        c, d = model.eval()(x), model(x)
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)
    assert isinstance(model.classifier.blocks[0].self_attn.core, VariantAttention)
