"""The model contract over every registered backbone: each builder takes the declared keyword
set with a parsed VariantSpec, and each model exposes the variant sites and keeps the same
state-dict keys whatever the variant."""

from __future__ import annotations

import pytest
import torch

from ablate.models import BackboneModel, create_model, list_models
from ablate.models._contract import BUILDER_KWARGS
from ablate.models._registry import model_entry
from variants import VariantSpec

NAMES = list_models()
TEXT = dict(vocab_size=50, word_dim=32, max_len=16, pad_index=0, freeze_embeddings=False)


def _common(name: str, variant: VariantSpec) -> dict:
    """Every BuilderKwargs key an ablate model takes (external-only keys aside)."""
    kwargs = dict(
        num_classes=3,
        variant=variant,
        apply_to="attention",
        dropout=0.0,
        attention_dropout=0.0,
        stochastic_depth=0.0,
        positional_embedding="learnable",
        norm_placement="pre",
    )
    if model_entry(name).task == "text":
        kwargs.update(TEXT)
    else:
        kwargs.update(img_size=16, in_chans=1)
    assert set(kwargs) <= BUILDER_KWARGS
    return kwargs


def _input(model, name: str) -> torch.Tensor:
    if model_entry(name).task == "text":
        return torch.randint(1, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    return torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", NAMES)
def test_every_builder_takes_the_declared_keywords_and_meets_the_contract(name):
    spec = VariantSpec("softmax_v", {"alpha": 0.5})
    model = model_entry(name).build(**_common(name, spec))  # the raw builder: no parsing
    assert isinstance(model, BackboneModel)
    assert model.variant == "softmax_v" and model.variant_param_names() == ("alpha",)
    assert model.variant_params() == {"alpha": 0.5}
    assert model.arch["variant"] == "softmax_v" and model.arch["variant_params"] == {"alpha": 0.5}
    # apply_to="attention": every self-attention runs it, sequence pooling plain softmax
    sites = [s.variant for s in model.attention_sites()]
    assert "softmax_v" in sites and set(sites) <= {"softmax_v", "softmax"}
    model.set_variant_params(alpha=0.25)
    assert model.variant_params() == {"alpha": 0.25}
    logits = model.eval()(_input(model, name))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith(("_2", "_2_4_32", "3x2_32"))])
def test_state_dict_keys_do_not_depend_on_the_variant(name):
    plain = model_entry(name).build(**_common(name, VariantSpec()))
    varied = model_entry(name).build(**_common(name, VariantSpec("alpha_remix", {"beta": 1.0})))
    assert list(plain.state_dict()) == list(varied.state_dict())
    assert not any("alpha" in k or "beta" in k for k in varied.state_dict())


def test_the_text_form_is_converted_once_at_the_entry():
    by_text = create_model("cct_2_3x2_32", variant="alpha_remix:alpha=0.3", img_size=16)
    by_spec = create_model(
        "cct_2_3x2_32", variant=VariantSpec("alpha_remix", {"alpha": 0.3}), img_size=16
    )
    assert by_text.arch == by_spec.arch
    # a saved arch (name + values) rebuilds the same model
    rebuilt = model_entry(by_text.name)(**by_text.arch)
    assert rebuilt.variant_params() == by_text.variant_params()
    merged = create_model(
        "cct_2_3x2_32", variant="alpha_remix:alpha=0.3", variant_params={"beta": 2}
    )
    assert merged.arch["variant_params"] == {"alpha": 0.3, "beta": 2.0}


def test_registered_models_are_not_external():
    assert not any(model_entry(n).external for n in NAMES)


def test_a_learned_alpha_survives_the_arch_round_trip():
    text = "softmax_v:alpha=learned,alpha_shape=head,alpha_init=0.25,alpha_range=[-1,1]"
    model = create_model("cct_2_3x2_32", variant=text, img_size=16)
    assert model.arch["variant"] == "softmax_v" and model.arch["variant_params"] == {}
    rebuilt = model_entry(model.name)(**model.arch)
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # the same trainable alphas
    assert any(s.learned_alpha is not None for s in rebuilt.attention_sites())
    plain = create_model("cct_2_3x2_32", variant="softmax_v:alpha=0.5", img_size=16)
    assert "variant_learned" not in plain.arch  # every other arch keeps its format
