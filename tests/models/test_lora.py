"""LoRA adapters: identity at init, gradients only where they belong, exact merging,
stable keys."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from ablate.config import RunConfig
from ablate.exceptions import ConfigError
from ablate.finetune import prepare_model
from ablate.models import create_model
from ablate.models.checkpoint import checkpoint_payload, model_from_checkpoint
from ablate.models.lora import (
    LoRALinear,
    apply_lora,
    is_lora_parameter,
    lora_modules,
    merge_lora,
    merge_lora_state_dict,
)

PROJECTIONS = ("self_attn.qkv", "self_attn.proj", "linear1", "linear2")


def _model(**kw) -> nn.Module:
    torch.manual_seed(0)
    return create_model("cct_2_3x2_32", img_size=16, in_chans=1, num_classes=10, **kw)


def _x(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _randomise_adapters(model: nn.Module) -> None:
    # Trained adapters are non-zero; B = 0 would make every merge check trivially pass.
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)


def test_adapters_wrap_every_projection_and_start_as_the_identity():
    model = _model().eval()
    x = _x()
    before = model(x)
    plain_keys = set(model.state_dict())
    names = apply_lora(model, rank=4, alpha=8.0)
    assert len(names) == 2 * 4  # 2 blocks x (qkv, proj, linear1, linear2)
    assert {n.split(".", 3)[-1] for n in names} == set(PROJECTIONS)
    for m in lora_modules(model).values():
        assert m.lora_A.shape == (4, m.in_features) and m.lora_B.shape == (m.out_features, 4)
        assert float(m.lora_scale) == 2.0 and torch.count_nonzero(m.lora_B) == 0
    # B = 0: the adapted model computes exactly the pretrained function.
    assert torch.equal(model(x), before)
    # The wrapped projections keep their own key names; adapters only add keys.
    keys = set(model.state_dict())
    assert plain_keys <= keys
    assert {k.rsplit(".", 1)[-1] for k in keys - plain_keys} == {"lora_A", "lora_B", "lora_scale"}


def test_only_adapters_and_head_receive_gradients():
    model = _model()
    cfg = RunConfig(lora_rank=2, lora_alpha=4.0)
    info = prepare_model(model, cfg)
    assert info["lora_modules"] == 8 and info["lora_scale"] == 2.0
    _randomise_adapters(model)  # with B = 0 the gradient of A would be exactly zero
    model.train()
    loss = nn.functional.cross_entropy(model(_x(8)), torch.arange(8) % 10)
    loss.backward()
    got, expected = set(), set()
    for name, p in model.named_parameters():
        trainable = is_lora_parameter(name) or name.startswith(
            ("classifier.fc.", "classifier.attention_pool.")
        )
        assert p.requires_grad == trainable, name
        if trainable:
            expected.add(name)
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
            got.add(name)
        else:
            assert p.grad is None, name
    assert got == expected
    assert sum(is_lora_parameter(n) for n in got) == 16
    assert {n for n in got if not is_lora_parameter(n)} == {
        "classifier.attention_pool.weight", "classifier.attention_pool.bias",
        "classifier.fc.weight", "classifier.fc.bias",
    }


def test_merged_model_and_merged_state_dict_give_the_adapted_logits():
    model = _model().eval()
    plain_keys = list(model.state_dict())
    apply_lora(model, rank=3, alpha=6.0)
    _randomise_adapters(model)
    x = _x()
    adapted = model(x)
    merged = merge_lora(copy.deepcopy(model))
    assert not lora_modules(merged)
    assert list(merged.state_dict()) == plain_keys  # official names, official order
    torch.testing.assert_close(merged(x), adapted, atol=1e-5, rtol=0)
    assert not torch.allclose(merged(x), _model().eval()(x), atol=1e-3)  # the adapters mattered

    fresh = _model().eval()
    fresh.load_state_dict(merge_lora_state_dict(model.state_dict()), strict=True)
    torch.testing.assert_close(fresh(x), adapted, atol=1e-5, rtol=0)


def test_adapted_state_dict_reloads_into_an_adapted_model(tmp_path):
    # What resuming a LoRA run does: last.pt of the wrapped model into a newly wrapped one.
    a = _model().eval()
    apply_lora(a, rank=2, alpha=2.0)
    _randomise_adapters(a)
    torch.save({"model": a.state_dict()}, tmp_path / "last.pt")
    b = _model().eval()
    torch.manual_seed(123)  # another adapter init, to be overwritten
    apply_lora(b, rank=2, alpha=2.0)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    b.load_state_dict(state["model"], strict=True)
    x = _x()
    assert torch.equal(a(x), b(x))


def test_merged_copy_has_official_keys_that_load_into_a_plain_model():
    # what a run's logged models store (ablate.tracking.models): a copy, adapters merged
    cfg = RunConfig(variant="softmax_v", lora_rank=2, lora_alpha=4.0)
    model = _model(variant="softmax_v")
    prepare_model(model, cfg)
    _randomise_adapters(model)
    model.set_variant_params(alpha=0.25)
    model.eval()
    x = _x()
    adapted = model(x)
    ckpt = checkpoint_payload(merge_lora(copy.deepcopy(model)))
    assert lora_modules(model)  # the live model keeps its adapters
    assert set(ckpt["model"]) == set(_model().state_dict())
    assert not any("lora" in k for k in ckpt["model"])
    assert ckpt["arch"]["variant_params"]["alpha"] == 0.25
    plain = model_from_checkpoint(ckpt)
    assert not lora_modules(plain)
    torch.testing.assert_close(plain(x), adapted, atol=1e-5, rtol=0)


def test_lora_linear_matches_its_merged_weight():
    base = nn.Linear(5, 7)
    lora = LoRALinear(base, rank=2, alpha=3.0)
    assert lora.weight is base.weight and not lora.weight.requires_grad
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(4, 3, 5)  # any leading dims
    expected = x @ lora.merged_weight().T + base.bias
    torch.testing.assert_close(lora(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(lora.to_linear()(x), expected, atol=1e-5, rtol=0)


def test_bad_lora_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="lora_rank"):
        apply_lora(_model(), rank=0, alpha=1.0)
    with pytest.raises(ConfigError, match="lora_alpha"):
        apply_lora(_model(), rank=2, alpha=0.0)
    with pytest.raises(ConfigError, match="no projection to adapt"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), rank=2, alpha=1.0)
    model = _model()
    apply_lora(model, rank=2, alpha=1.0)
    with pytest.raises(ConfigError, match="already has LoRA"):
        apply_lora(model, rank=2, alpha=1.0)
    sd = model.state_dict()
    del sd["classifier.blocks.0.linear1.lora_scale"]
    with pytest.raises(ValueError, match=r"classifier\.blocks\.0\.linear1: missing .*lora_scale"):
        merge_lora_state_dict(sd)
