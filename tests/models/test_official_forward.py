"""Our forward pass against an independent float64 re-statement of the official one.

``official_forward`` below is written from the description in
``tests/fixtures/reference/README.md`` and the sizes in ``cct_model_table.json`` only (it uses
none of our modules): conv tokenizer, ``x = x + attn(pre_norm(x)); x = norm1(x);
x = x + mlp(x)``, final norm, ``softmax(attention_pool(x), dim=1)^T @ x`` (or the class
token), fc; attention as explicit ``softmax(q k^T * d^-0.5) v``. It runs on a state dict
with the official keys, as an official checkpoint would provide.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ablate.models import create_model
from ablate.models.checkpoint import load_pretrained

LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by the official code

# (model to build, official key list it loads, official table row)
CASES = [
    ("cct_7_3x1_32", "cct_7_3x1_32"),
    ("cct_2_3x2_32", "cct_2_3x2_32"),
    ("cvt_7_4_32", "cvt_7_4_32"),
    ("vit_7_4_32", "vit_7_4_32"),
    # Official *_sine CCT checkpoints have the same keys (their table was learned).
    ("cct_7_3x1_32_sine", "cct_7_3x1_32"),
]


def random_official_state_dict(keys: list, seed: int = 0) -> dict[str, torch.Tensor]:
    """Official ``[key, shape]`` pairs with values at trained-network scales (so every part
    of the network, norms and biases included, visibly affects the logits)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in keys:
        randn = torch.randn(*shape, generator=g)
        if key.endswith(("norm.weight", "norm1.weight")):
            value = 1.0 + 0.2 * randn
        elif key.endswith("weight") and len(shape) >= 2:
            value = randn / math.sqrt(math.prod(shape[1:]))  # fan-in scaling
        elif key.endswith(("positional_emb", "class_emb")):
            value = 0.5 * randn
        else:  # biases, layer-norm shifts
            value = 0.1 * randn
        sd[key] = value
    return sd


def layer_norm(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, as LayerNorm
    return (x - mean) / torch.sqrt(var + LN_EPS) * sd[prefix + ".weight"] + sd[prefix + ".bias"]


def linear(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    out = x @ sd[prefix + ".weight"].T
    bias = sd.get(prefix + ".bias")
    return out if bias is None else out + bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # exact GELU (F.gelu default)


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def attention(x: torch.Tensor, sd: dict, prefix: str, heads: int) -> torch.Tensor:
    B, N, C = x.shape
    d = C // heads
    qkv = (x @ sd[prefix + ".qkv.weight"].T).reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d)
    weights = softmax(q @ k.transpose(-2, -1) * d**-0.5, dim=-1)  # (B, H, N, N)
    out = (weights @ v).transpose(1, 2).reshape(B, N, C)
    return linear(out, sd, prefix + ".proj")


def official_forward(
    state: dict, images: torch.Tensor, row: dict, norm_placement: str = "cct"
) -> torch.Tensor:
    """The official forward pass in float64, eval mode (dropout / drop-path are identity)."""
    sd = {k: v.double() for k, v in state.items()}
    x = images.double()
    cct_tokenizer = row["name"].startswith("cct_")  # CCT: conv -> ReLU -> max-pool per layer
    for i, conv in enumerate(row["conv"]):
        x = F.conv2d(
            x,
            sd[f"tokenizer.conv_layers.{i}.0.weight"],
            sd.get(f"tokenizer.conv_layers.{i}.0.bias"),
            stride=conv["s"],
            padding=conv["p"],
        )
        if cct_tokenizer:
            x = F.max_pool2d(torch.clamp(x, min=0.0), kernel_size=3, stride=2, padding=1)
    x = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, C)
    if row["class_token"]:
        x = torch.cat([sd["classifier.class_emb"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + sd["classifier.positional_emb"]
    for layer in range(row["num_layers"]):
        p = f"classifier.blocks.{layer}"
        x = x + attention(
            layer_norm(x, sd, p + ".pre_norm"), sd, p + ".self_attn", row["num_heads"]
        )
        if norm_placement == "cct":
            x = layer_norm(x, sd, p + ".norm1")  # the residual stream itself is normalised
            x = x + linear(gelu(linear(x, sd, p + ".linear1")), sd, p + ".linear2")
        else:  # standard pre-norm
            h = layer_norm(x, sd, p + ".norm1")
            x = x + linear(gelu(linear(h, sd, p + ".linear1")), sd, p + ".linear2")
    x = layer_norm(x, sd, "classifier.norm")
    if row["seq_pool"]:
        w = softmax(linear(x, sd, "classifier.attention_pool"), dim=1)  # (B, N, 1)
        x = (w.transpose(-1, -2) @ x).squeeze(-2)  # (B, C)
    else:
        x = x[:, 0]
    return linear(x, sd, "classifier.fc")


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def assert_relative_close(ours: torch.Tensor, ref: torch.Tensor, rel: float) -> None:
    """Element-wise relative error, with the logits' scale as the floor for ~0 entries."""
    scale = ref.abs().max().item()
    err = ((ours.double() - ref).abs() / ref.abs().clamp_min(scale * 0.1)).max().item()
    assert err <= rel, f"relative error {err:.3g} > {rel:g} (logit scale {scale:.3g})"


@pytest.mark.parametrize(("name", "keys_of"), CASES)
def test_matches_official_forward(name, keys_of, cct_keys, cct_model_table):
    row = dict(cct_model_table[keys_of], name=keys_of)
    sd = random_official_state_dict(cct_keys[keys_of])
    x = images()
    ref = official_forward(sd, x, row)
    assert ref.abs().max() > 0.1 and ref.std() > 0.05  # a non-degenerate test

    model = create_model(name, variant="softmax", norm_placement="cct")
    load_pretrained(model, sd, strict=True)
    model.eval()
    with torch.no_grad():
        ours = model(x)
        assert_relative_close(ours, ref, 1e-5)  # float32, as the issue demands
        # In float64 the two must agree to round-off: same function, not just similar.
        ours64 = model.double()(x.double())
    torch.testing.assert_close(ours64, ref, rtol=1e-10, atol=1e-10)


def test_pre_norm_differs_and_matches_standard_pre_norm(cct_keys, cct_model_table):
    row = dict(cct_model_table["cct_2_3x2_32"], name="cct_2_3x2_32")
    sd = random_official_state_dict(cct_keys["cct_2_3x2_32"], seed=2)
    x = images(seed=3)
    model = create_model("cct_2_3x2_32", norm_placement="pre")
    load_pretrained(model, sd)
    with torch.no_grad():
        ours = model.eval().double()(x.double())
    torch.testing.assert_close(
        ours, official_forward(sd, x, row, norm_placement="pre"), rtol=1e-10, atol=1e-10
    )
    official = official_forward(sd, x, row, norm_placement="cct")
    assert (ours - official).abs().max() > 1e-2 * official.abs().max()


def test_pre_norm_trains():
    torch.manual_seed(0)
    model = create_model(
        "cct_2_3x2_32", norm_placement="pre", attention_dropout=0.0, stochastic_depth=0.0
    )
    x = images(16, seed=4)
    y = torch.arange(16) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.35 * losses[0], f"loss went {losses[0]:.3f} -> {losses[-1]:.3f}"
