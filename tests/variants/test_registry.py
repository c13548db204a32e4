"""The variant registry: decorator, lookup, listing, parsing, user files, entry points, bias."""

from __future__ import annotations

import sys
import textwrap
import warnings

import pytest
import torch
from helpers import install_plugin  # tests/helpers.py

import variants
from variants import _registry
from variants.reference import naive_attention


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Each test works on a copy of the registry; whatever it registers disappears after."""
    monkeypatch.setattr(_registry.VARIANTS, "entries", dict(_registry.VARIANTS.entries))
    monkeypatch.setattr(_registry.VARIANTS, "plugins_loaded", _registry.VARIANTS.plugins_loaded)
    yield


def assert_float32_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """A float32 result against a float64 reference."""
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


def qkv(seed: int = 0, shape=(2, 2, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g) for _ in range(3))


def test_builtins_are_listed_with_description_and_params():
    specs = {s.name: s for s in variants.list_attention()}
    assert {"softmax", "softmax_v", "alpha_remix"} <= set(specs)
    assert specs["softmax"].params == {}
    assert specs["softmax_v"].params == {"alpha": 1.0}
    assert specs["alpha_remix"].params == {"alpha": 0.5, "beta": None}
    for name in ("softmax", "softmax_v", "alpha_remix"):
        assert specs[name].description and "\n" not in specs[name].description
        assert specs[name].source == "builtin"
    assert [s.name for s in variants.list_attention("softmax*")] == [
        "softmax",
        "softmax_v",
        "softmax_v_scaled",
    ]


def test_decorator_registers_and_lookup_returns_it():
    @variants.register_attention("test_doubled", params={"gain": 2.0})
    def doubled(q, k, v, *, mask=None, dropout_p=0.0, scale=None, gain=2.0):
        """Standard attention times a gain.

        More text that is not the description.
        """
        return gain * torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)

    spec = variants.get_attention("test_doubled")
    assert spec.fn is doubled
    assert spec.params == {"gain": 2.0}
    assert spec.description == "Standard attention times a gain."
    assert spec.source == __name__  # not a built-in
    assert spec.resolve_params({"gain": 3}) == {"gain": 3.0}
    q, k, v = qkv()
    assert_float32_close(spec.fn(q, k, v, gain=3.0), 3 * naive_attention(q, k, v))

    # Default name = the function's own name; explicit description wins over the docstring.
    @variants.register_attention(description="no docstring here")
    def test_unnamed(q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        return v

    assert variants.get_attention("test_unnamed").description == "no docstring here"


def test_duplicate_registration_warns_but_same_function_does_not():
    def first(q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        return v

    def second(q, k, v, *, mask=None, dropout_p=0.0, scale=None):
        return q

    variants.register_attention("test_dup")(first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        variants.register_attention("test_dup")(first)  # re-importing a module: no noise
    with pytest.warns(UserWarning, match="'test_dup' re-registered"):
        variants.register_attention("test_dup")(second)
    assert variants.get_attention("test_dup").fn is second  # the later one wins


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        variants.get_attention("sofmax")
    message = str(info.value)
    assert "'sofmax'" in message and "\n" not in message
    for name in ("softmax", "softmax_v", "alpha_remix"):
        assert name in message


def test_parse_variant():
    assert variants.parse_variant("alpha_remix:alpha=1,beta=1") == (
        "alpha_remix",
        {"alpha": 1.0, "beta": 1.0},
    )
    assert variants.parse_variant("softmax") == ("softmax", {})
    assert variants.parse_variant(" softmax_v : alpha = -0.5 ") == ("softmax_v", {"alpha": -0.5})
    assert variants.parse_variant("alpha_remix:alpha=10,beta=0") == (
        "alpha_remix",
        {"alpha": 10.0, "beta": 0.0},
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("softmax_v:gamma=1", "no parameter 'gamma'"),
        ("softmax:alpha=1", "no parameter 'alpha'"),
        ("softmax_v:alpha", "key=value"),
        ("softmax_v:alpha=high", "must be a number"),
        ("nonexistent:alpha=1", "unknown attention variant"),
    ],
)
def test_parse_variant_rejects_bad_input(text, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        variants.parse_variant(text)
    assert "\n" not in str(info.value)


def test_load_variant_file_registers_and_runs_in_a_model(tmp_path):
    path = tmp_path / "my_variants.py"
    path.write_text(
        textwrap.dedent(
            '''
            import torch.nn.functional as F
            from variants import register_attention, sdpa_mask

            @register_attention("test_file_scaled", params={"gain": 0.5})
            def scaled(q, k, v, *, mask=None, dropout_p=0.0, scale=None, gain=0.5):
                """Attention output times gain (from a user file)."""
                return gain * F.scaled_dot_product_attention(
                    q, k, v, attn_mask=sdpa_mask(mask), dropout_p=dropout_p, scale=scale
                )
            '''
        )
    )
    assert variants.load_variant_file(path) == ["test_file_scaled"]
    spec = variants.get_attention("test_file_scaled")
    assert spec.source == f"file {path}"
    assert spec.description == "Attention output times gain (from a user file)."
    q, k, v = qkv(1)
    assert_float32_close(spec.fn(q, k, v, gain=0.5), 0.5 * naive_attention(q, k, v))

    from ablate.models import create_model

    model = create_model("cct_2_3x2_32", variant="test_file_scaled:gain=2", apply_to="both").eval()
    assert model.variant_params() == {"gain": 2.0}
    assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()

    with pytest.raises(ValueError, match="does not exist"):
        variants.load_variant_file(tmp_path / "missing.py")


DIST_MODULE = "ablate_test_plugin_variants"


def test_entry_point_variant_is_found_by_name(tmp_path, monkeypatch):
    """A real installed-distribution layout: ``*.dist-info`` with METADATA + entry_points.txt."""
    install_plugin(
        tmp_path, "ablate-test-plugin",
        textwrap.dedent(
            f"""
            [ablate.variants]
            test_ep_plain = {DIST_MODULE}:plain_scaled
            test_ep_decorated = {DIST_MODULE}:decorated
            test_ep_broken = {DIST_MODULE}_missing:nothing
            """
        ),
        {DIST_MODULE: textwrap.dedent(
            '''
            import torch.nn.functional as F
            from variants import register_attention, sdpa_mask

            def plain_scaled(q, k, v, *, mask=None, dropout_p=0.0, scale=None, gain=3.0):
                """Undecorated plug-in: attention times gain."""
                return gain * F.scaled_dot_product_attention(
                    q, k, v, attn_mask=sdpa_mask(mask), dropout_p=dropout_p, scale=scale
                )

            plain_scaled.ablate_params = {"gain": 3.0}

            @register_attention("test_ep_decorated", params={"alpha": 0.25})
            def decorated(q, k, v, *, mask=None, dropout_p=0.0, scale=None, alpha=0.25):
                """Decorated plug-in: attention on alpha * V."""
                return F.scaled_dot_product_attention(q, k, alpha * v, scale=scale)
            '''
        )},
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates the import/metadata caches
    monkeypatch.setattr(_registry.VARIANTS, "plugins_loaded", False)
    monkeypatch.delitem(sys.modules, DIST_MODULE, raising=False)
    try:
        assert "test_ep_plain" not in _registry.VARIANTS.entries
        with pytest.warns(
            UserWarning, match="could not load attention variant entry point 'test_ep_broken'"
        ):
            spec = variants.get_attention("test_ep_plain")
        assert spec.params == {"gain": 3.0}
        assert spec.source.startswith("entry point ")
        assert spec.description == "Undecorated plug-in: attention times gain."
        q, k, v = qkv(2)
        assert_float32_close(spec.fn(q, k, v), 3 * naive_attention(q, k, v))

        decorated = variants.get_attention("test_ep_decorated")
        assert decorated.params == {"alpha": 0.25}
        assert decorated.source == DIST_MODULE
        assert {"test_ep_plain", "test_ep_decorated"} <= {
            s.name for s in variants.list_attention()
        }
        with pytest.raises(ValueError, match="test_ep_broken"):
            # A broken plug-in is skipped (with the warning above), not half-registered; the
            # error lists what is valid.
            variants.get_attention("test_ep_broken")

        from ablate.models import create_model

        model = create_model("cvt_2_4_32", variant="test_ep_plain:gain=0.5").eval()
        assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()
    finally:
        sys.modules.pop(DIST_MODULE, None)


# -- the additive score bias and variants written for the older contract ------------------
README_VALUE_TANH = '''
import torch.nn.functional as F
from variants import register_attention

@register_attention("value_tanh", params={"alpha": 1.0})
def value_tanh(q, k, v, *, mask=None, dropout_p=0.0, scale=None, alpha=1.0):
    """softmax(QK^T) tanh(alpha V)."""
    attn_mask = None if mask is None else mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, (alpha * v).tanh(), attn_mask=attn_mask,
                                          dropout_p=dropout_p, scale=scale)
'''


def test_builtins_accept_bias_and_signature_decides_it():
    for name in ("softmax", "softmax_v", "alpha_remix"):
        assert variants.get_attention(name).accepts_bias, name

    @variants.register_attention("test_kw_bias")
    def kw_bias(q, k, v, *, mask=None, bias=None, dropout_p=0.0, scale=None):
        return v

    @variants.register_attention("test_var_kw")
    def var_kw(q, k, v, *, mask=None, dropout_p=0.0, scale=None, **opts):
        return v  # a bias would vanish into **opts: must not count as accepting one

    assert variants.get_attention("test_kw_bias").accepts_bias
    assert not variants.get_attention("test_var_kw").accepts_bias


def test_old_contract_variant_runs_without_bias_and_refuses_one(tmp_path):
    from ablate.exceptions import ConfigError
    from ablate.models.compact import VariantAttention

    path = tmp_path / "my_variants.py"
    path.write_text(README_VALUE_TANH)
    assert variants.load_variant_file(path) == ["value_tanh"]
    spec = variants.get_attention("value_tanh")
    assert not spec.accepts_bias  # recorded once, at registration
    assert spec.source == f"file {path}"  # load_variant_file's re-labelling keeps the flag

    site = VariantAttention("value_tanh", {"alpha": 0.5})
    q, k, v = qkv(3)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    expected = naive_attention(q, k, (0.5 * v).tanh(), mask=mask)
    keep = mask[:, None, :, None].expand_as(expected)
    assert_float32_close(site(q, k, v, mask=mask)[keep], expected[keep])
    assert_float32_close(site(q, k, v, mask=mask, bias=None)[keep], expected[keep])

    bias = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ConfigError, match=r"'value_tanh'.*must accept bias=") as info:
        site(q, k, v, mask=mask, bias=bias)
    assert "\n" not in str(info.value)
    # A model that knows it passes a bias finds out when it is built, not at the first step.
    with pytest.raises(ConfigError, match=r"'value_tanh'.*must accept bias="):
        VariantAttention("value_tanh", needs_bias=True)


def test_variant_attention_passes_bias_to_new_contract_variants():
    from ablate.models.compact import VariantAttention

    q, k, v = qkv(4)
    bias = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[True] * 5, [True, True, True, True, False]])
    site = VariantAttention("softmax_v", {"alpha": 0.5}, needs_bias=True)
    out = site(q, k, v, mask=mask, bias=bias, scale=0.3)
    ref = naive_attention(q, k, v, mask=mask, bias=bias, scale=0.3, alpha=0.5)
    keep = mask[:, None, :, None].expand_as(ref)
    assert_float32_close(out[keep], ref[keep])
    # Without the bias it is a different (and still correct) result: the bias was used.
    plain = naive_attention(q, k, v, mask=mask, scale=0.3, alpha=0.5)
    assert_float32_close(site(q, k, v, mask=mask, scale=0.3)[keep], plain[keep])
    assert not torch.allclose(out[keep].double(), plain[keep], atol=1e-3)
