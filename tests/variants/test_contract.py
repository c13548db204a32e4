"""Every built-in attention variant against the float64 naive oracle (variants/reference.py).

The oracle is explicit ``softmax(q k^T * scale) @ (alpha * softmax^T(v) + beta * v)``; the
variants go through ``scaled_dot_product_attention``. Padded keys/values are filled with
huge garbage so that any use of them (in the attention or in the token softmax of V) would
change the result by orders of magnitude.
"""

from __future__ import annotations

import pytest
import torch

import variants
from variants.reference import ORACLES, naive_attention

# (registry name, parameter overrides); the oracle is ORACLES[name] with the resolved params.
CONFIGS = [
    ("softmax", {}),
    ("softmax_v", {}),  # default alpha = 1: pure softmax^T(V)
    ("softmax_v", {"alpha": 0.3}),
    ("alpha_remix", {}),  # default alpha = 0.5, beta = 1 - alpha
    ("alpha_remix", {"alpha": 1.0, "beta": 1.0}),  # V + softmax^T(V)
    ("alpha_remix", {"alpha": -1.0, "beta": 1.0}),  # V - softmax^T(V)
    ("alpha_remix", {"alpha": 10.0, "beta": 0.0}),  # 10 * softmax^T(V)
    ("alpha_remix", {"alpha": 0.7, "beta": 2.5}),
    ("softmax_v_scaled", {}),  # N * softmax^T(V), N = real tokens per sequence
    ("softmax_v_scaled", {"alpha": 0.4}),
    ("laser", {}),
    ("laser_remix", {}),  # default alpha = 0.5
    ("laser_remix", {"alpha": -0.5}),
    ("value_rmsnorm", {}),
]
CONFIG_IDS = [n + "".join(f"-{k}{v:g}" for k, v in p.items()) for n, p in CONFIGS]


def oracle(name: str, params: dict, q, k, v, mask=None, bias=None, scale=None):
    """The float64 oracle of a registered variant at its resolved parameters."""
    resolved = variants.get_attention(name).resolve_params(params)
    return ORACLES[name](q, k, v, mask=mask, bias=bias, scale=scale, **resolved)


# (B, H, Nq, Nk, D, Dv): self-attention, value dim != key dim, cross-attention, one token
SHAPES = [
    (2, 2, 5, 5, 4, 4),
    (1, 3, 7, 7, 8, 8),
    (3, 2, 6, 6, 8, 3),
    (2, 1, 3, 6, 4, 5),
    (1, 1, 1, 1, 4, 4),
]
GARBAGE = 1.0e4  # exp(1e4) overflows: a pad that leaks into any softmax ruins the result


def call(
    name: str,
    params: dict,
    q,
    k,
    v,
    mask=None,
    dropout_p: float = 0.0,
    tensors: bool = True,
    bias=None,
):
    """Call a variant the way a model's attention site does: resolved parameters as 0-d
    tensors (float32 buffers, float64 for float64 inputs), derived ones (beta) as None; the
    bias only when there is one (as VariantAttention does)."""
    spec = variants.get_attention(name)
    resolved = spec.resolve_params(params)
    pdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    kwargs = {
        key: (None if val is None else torch.tensor(val, dtype=pdtype) if tensors else val)
        for key, val in resolved.items()
    }
    if bias is not None:
        kwargs["bias"] = bias
    return spec.fn(q, k, v, mask=mask, dropout_p=dropout_p, **kwargs)


def make_inputs(shape, dtype, masked: bool, seed: int = 0):
    """Clean inputs, a mask, and the same inputs with garbage at padded keys/values/queries."""
    B, H, Nq, Nk, D, Dv = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, Nk, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, Nk, Dv, generator=g, dtype=torch.float64)
    if not masked:
        return (q, k, v), None, (q.to(dtype), k.to(dtype), v.to(dtype))
    mask = torch.rand(B, Nk, generator=g) < 0.6
    mask[:, 0] = True  # at least one real token per sequence
    if Nk > 2:
        mask[0, -1] = False  # at least one pad
    pad = ~mask[:, None, :, None]  # (B, 1, Nk, 1)
    signs = torch.randint(0, 2, (B, H, Nk, 1), generator=g) * 2 - 1
    k_bad = torch.where(pad, GARBAGE * signs, k)
    v_bad = torch.where(pad, GARBAGE * signs, v)
    q_bad = q
    if Nq == Nk:  # self-attention: the padded queries are garbage too
        q_bad = torch.where(pad, -GARBAGE * signs, q)
    return (q, k, v), mask, (q_bad.to(dtype), k_bad.to(dtype), v_bad.to(dtype))


def real_query_rows(out: torch.Tensor, mask, n_q: int) -> torch.Tensor:
    """Outputs at real query positions only (B, H, Nq, Dv) -> (n, Dv)."""
    if mask is None or mask.shape[1] != n_q:
        return out.reshape(-1, out.shape[-1])
    keep = mask[:, None, :].expand(out.shape[0], out.shape[1], n_q)
    return out[keep]


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_variant_matches_float64_oracle(name, params, shape, masked):
    clean, mask, (q, k, v) = make_inputs(shape, torch.float64, masked)
    ref = oracle(name, params, *clean, mask=mask)
    # float64 through SDPA: the formula itself, to round-off.
    out64 = call(name, params, q, k, v, mask)
    assert out64.shape == ref.shape
    assert torch.isfinite(out64).all()
    torch.testing.assert_close(
        real_query_rows(out64, mask, shape[2]),
        real_query_rows(ref, mask, shape[2]),
        rtol=1e-9,
        atol=1e-10,
    )
    # float32 (the fused kernels actually used in training), parameters as Python floats too.
    _, _, (q32, k32, v32) = make_inputs(shape, torch.float32, masked)
    for tensors in (True, False):
        out32 = call(name, params, q32, k32, v32, mask, tensors=tensors)
        assert out32.dtype == torch.float32
        assert torch.isfinite(out32).all()
        torch.testing.assert_close(
            real_query_rows(out32.double(), mask, shape[2]),
            real_query_rows(ref, mask, shape[2]),
            rtol=1e-4,
            atol=2e-5,
        )


BIAS_KINDS = ["rel_pos", "full", "hf_keys", "hf_causal", "2d"]
HF_MIN = torch.finfo(torch.float32).min  # what Hugging Face puts in extended attention masks


def make_bias(kind: str, shape, mask, seed: int = 1):
    """A float64 score bias of one of the shapes models pass, and the same bias with garbage
    (+GARBAGE: a pad that leaked would take all the weight) at padded keys.

    rel_pos (1, H, Nq, Nk) a relative position bias (Swin); full (B, H, Nq, Nk) windowed
    ones; hf_keys (B, 1, 1, Nk) an extended additive mask hiding some real keys; hf_causal
    (B, 1, Nq, Nk) a causal additive mask with -inf; 2d (Nq, Nk).
    """
    B, H, Nq, Nk, _, _ = shape
    g = torch.Generator().manual_seed(seed)
    if kind == "rel_pos":
        bias = 2 * torch.randn(1, H, Nq, Nk, generator=g, dtype=torch.float64)
    elif kind == "full":
        bias = 2 * torch.randn(B, H, Nq, Nk, generator=g, dtype=torch.float64)
    elif kind == "hf_keys":
        hidden = torch.rand(B, 1, 1, Nk, generator=g) < 0.3
        hidden[..., 0] = False  # key 0 (always real) stays visible to every query
        bias = torch.zeros(B, 1, 1, Nk, dtype=torch.float64).masked_fill(hidden, HF_MIN)
    elif kind == "hf_causal":
        i = torch.arange(Nq)[:, None] + (Nk - Nq)  # last query sees every key
        allowed = torch.arange(Nk)[None, :] <= i  # (Nq, Nk)
        bias = torch.zeros(B, 1, Nq, Nk, dtype=torch.float64)
        bias = bias.masked_fill(~allowed, float("-inf"))
    elif kind == "2d":
        bias = torch.randn(Nq, Nk, generator=g, dtype=torch.float64)
    else:
        raise AssertionError(kind)
    if mask is None:
        return bias, bias
    pad = ~mask[:, None, None, :]  # (B, 1, 1, Nk)
    return bias, torch.where(pad, GARBAGE, bias)  # broadcast to (B, ., Nq, Nk)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("bias_kind", BIAS_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_variant_with_bias_matches_float64_oracle(name, params, shape, bias_kind, masked):
    clean, mask, (q, k, v) = make_inputs(shape, torch.float64, masked)
    bias, bias_bad = make_bias(bias_kind, shape, mask)
    ref = oracle(name, params, *clean, mask=mask, bias=bias)
    assert torch.isfinite(ref).all()
    out64 = call(name, params, q, k, v, mask, bias=bias_bad)
    assert out64.shape == ref.shape
    torch.testing.assert_close(
        real_query_rows(out64, mask, shape[2]),
        real_query_rows(ref, mask, shape[2]),
        rtol=1e-9,
        atol=1e-10,
    )
    _, _, (q32, k32, v32) = make_inputs(shape, torch.float32, masked)
    out32 = call(name, params, q32, k32, v32, mask, bias=bias_bad.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(
        real_query_rows(out32.double(), mask, shape[2]),
        real_query_rows(ref, mask, shape[2]),
        rtol=1e-4,
        atol=2e-5,
    )


def test_bias_never_decides_which_tokens_are_real():
    # Hiding key j with a -inf bias and padding it with the mask are the same thing for the
    # scores, so for standard attention; but softmax^T(V) is normalised over the tokens the
    # MASK keeps: with the bias alone token j still takes part in it.
    shape = (2, 2, 6, 6, 4, 4)
    (q, k, v), _, _ = make_inputs(shape, torch.float64, masked=False, seed=7)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 4] = False
    hide = torch.zeros(2, 1, 1, 6, dtype=torch.float64).masked_fill(~mask[:, None, None], -1e30)
    torch.testing.assert_close(
        call("softmax", {}, q, k, v, bias=hide), call("softmax", {}, q, k, v, mask=mask)
    )
    by_bias = call("softmax_v", {}, q, k, v, bias=hide)
    by_mask = call("softmax_v", {}, q, k, v, mask=mask)
    torch.testing.assert_close(by_bias, naive_attention(q, k, v, bias=hide, alpha=1.0))
    torch.testing.assert_close(by_mask, naive_attention(q, k, v, mask=mask, alpha=1.0))
    assert not torch.allclose(by_bias, by_mask, atol=1e-3)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_bias_gradient_matches_oracle(name, params):
    # A learnable relative position bias (Swin) must get its gradient: (B, H, N, N) so that
    # every padded key's entries belong to one sequence and must get exactly zero.
    shape = (2, 2, 6, 6, 4, 4)
    clean, mask, (q, k, v) = make_inputs(shape, torch.float64, masked=True, seed=8)
    bias_clean, bias_bad = make_bias("full", shape, mask, seed=3)
    ours = bias_bad.clone().requires_grad_(True)
    ref = bias_clean.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(2, 2, 6, 4, dtype=torch.float64, generator=g)
    weights = weights * mask[:, None, :, None]  # real query rows only
    (call(name, params, q, k, v, mask, bias=ours) * weights).sum().backward()
    (oracle(name, params, *clean, mask=mask, bias=ref) * weights).sum().backward()
    pad = ~mask[:, None, None, :].expand_as(ours)  # (B, H, Nq, Nk)
    assert ours.grad is not None and ours.grad[~pad].abs().sum() > 0
    assert (ours.grad[pad] == 0).all(), "padded keys' bias received gradient"
    torch.testing.assert_close(ours.grad[~pad], ref.grad[~pad], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_bfloat16_inputs_stay_close_to_oracle(name, params):
    # softmax^T(V) is computed in float32 under bf16, so the error stays at bf16 rounding.
    clean, mask, (q, k, v) = make_inputs((2, 2, 16, 16, 8, 8), torch.bfloat16, masked=True)
    ref = oracle(name, params, *clean, mask=mask)
    out = call(name, params, q, k, v, mask)
    assert out.dtype == torch.bfloat16
    scale = ref.abs().max().item()
    err = (real_query_rows(out.double(), mask, 16) - real_query_rows(ref, mask, 16)).abs().max()
    assert err <= 3e-2 * max(scale, 1.0), f"bf16 error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_softmax_v_alpha0_is_bitwise_softmax(masked):
    _, mask, (q, k, v) = make_inputs((2, 4, 9, 9, 8, 8), torch.float32, masked, seed=3)
    base = call("softmax", {}, q, k, v, mask)
    assert torch.equal(call("softmax_v", {"alpha": 0.0}, q, k, v, mask), base)
    # And it is a real switch: alpha=1 is something else.
    assert not torch.allclose(call("softmax_v", {"alpha": 1.0}, q, k, v, mask), base, atol=1e-3)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_alpha_remix_endpoints(masked):
    _, mask, (q, k, v) = make_inputs((2, 4, 9, 9, 8, 8), torch.float32, masked, seed=4)
    torch.testing.assert_close(
        call("alpha_remix", {"alpha": 0.0}, q, k, v, mask), call("softmax", {}, q, k, v, mask)
    )
    torch.testing.assert_close(
        call("alpha_remix", {"alpha": 1.0}, q, k, v, mask), call("softmax_v", {}, q, k, v, mask)
    )
    # beta given explicitly equal to 1 - alpha is the same as beta derived.
    torch.testing.assert_close(
        call("alpha_remix", {"alpha": 0.25, "beta": 0.75}, q, k, v, mask),
        call("softmax_v", {"alpha": 0.25}, q, k, v, mask),
    )


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_gradients_reach_qkv_and_match_oracle(name, params):
    clean, mask, inputs = make_inputs((2, 2, 6, 6, 4, 4), torch.float64, masked=True, seed=5)
    q, k, v = (t.clone().requires_grad_(True) for t in inputs)
    weights = torch.randn(
        2, 2, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)
    )
    # The loss reads real query rows only (as a model's later masking does): garbage queries
    # at pads would otherwise legitimately send gradient into the real keys.
    weights = weights * mask[:, None, :, None]
    (call(name, params, q, k, v, mask) * weights).sum().backward()

    # The oracle sees clean values at the pads (it only has to be right, not robust).
    qr, kr, vr = (t.clone().requires_grad_(True) for t in clean)
    (oracle(name, params, qr, kr, vr, mask=mask) * weights).sum().backward()

    pad = ~mask[:, None, :, None]  # (B, 1, N, 1)
    for ours, ref, label in ((q, qr, "q"), (k, kr, "k"), (v, vr, "v")):
        assert ours.grad is not None, f"no gradient reached {label}"
        assert torch.isfinite(ours.grad).all(), f"non-finite gradient for {label}"
        assert ours.grad.abs().sum() > 0, f"zero gradient for {label}"
        padded = pad.expand_as(ours.grad)
        if label != "q":
            # Padded keys and values must not influence anything, so they get no gradient.
            assert (ours.grad[padded] == 0).all(), f"padded {label} received gradient"
        # Real positions only: a padded query row sees garbage in ours, clean in the oracle.
        torch.testing.assert_close(ours.grad[~padded], ref.grad[~padded], rtol=1e-8, atol=1e-10)


ONE_PER_VARIANT = list({name: (name, params) for name, params in reversed(CONFIGS)}.values())


@pytest.mark.parametrize(("name", "params"), ONE_PER_VARIANT, ids=lambda x: str(x))
def test_attention_dropout_in_training_runs(name, params):
    _, mask, (q, k, v) = make_inputs((2, 2, 16, 16, 8, 8), torch.float32, masked=True, seed=6)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    torch.manual_seed(0)
    dropped = call(name, params, q, k, v, mask, dropout_p=0.5)
    plain = call(name, params, q, k, v, mask)
    assert dropped.shape == plain.shape
    assert torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, plain), "dropout_p=0.5 changed nothing"
    dropped.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_oracle_itself_is_standard_attention():
    # Guard against a broken oracle making everything agree: check it against first principles.
    q, k, v = (torch.randn(1, 1, 3, 2, dtype=torch.float64) for _ in range(3))
    w = torch.exp(q[0, 0] @ k[0, 0].T / 2**0.5)
    expected = (w / w.sum(dim=1, keepdim=True)) @ v[0, 0]
    torch.testing.assert_close(naive_attention(q, k, v)[0, 0], expected)
    col = torch.exp(v[0, 0]) / torch.exp(v[0, 0]).sum(dim=0, keepdim=True)
    torch.testing.assert_close(
        naive_attention(q, k, v, alpha=1.0)[0, 0], (w / w.sum(1, keepdim=True)) @ col
    )


# -- low precision: the softmax^T(V) term survives bf16 -----------------------------------
def _term_error(name, params, alpha, beta, n, mask=None, bias=None, seed=0):
    """Relative error of alpha * S softmax^T(V), S = softmax(QK^T + bias), computed under CPU
    bf16 autocast (the same arithmetic as CUDA autocast), against float64 on the same
    bf16-rounded inputs. The term is read off the variant as out(alpha) - beta * out(alpha=0):
    softmax^T(V) entries are ~alpha/N, far below bf16 resolution next to beta * V."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, n, 16, generator=g).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(name, params, q, k, v, mask, bias=bias)
        base = call(name, {**params, "alpha": 0.0}, q, k, v, mask, bias=bias)
    b = 1.0 - alpha if beta is None else beta
    term = out.double() - b * base.double()
    q64, k64, v64 = q.double(), k.double(), v.double()
    ref = alpha * naive_attention(q64, k64, v64, mask=mask, bias=bias, alpha=1.0)
    term, ref = real_query_rows(term, mask, n), real_query_rows(ref, mask, n)
    return ((term - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("n", [16, 64, 256, 1024])
def test_autocast_bf16_keeps_the_softmax_v_term(n, alpha):
    # Before the split product (V' blended, then cast to bf16) this error was 380% at N=64,
    # alpha=0.01 and 1660% at N=1024.
    err = _term_error("softmax_v", {"alpha": alpha}, alpha, None, n)
    assert err <= 0.05, f"N={n} alpha={alpha}: softmax^T(V) term off by {100 * err:.1f}%"


def test_autocast_bf16_keeps_the_alpha_remix_term_with_mask_and_bias():
    n = 256
    g = torch.Generator().manual_seed(11)
    mask = torch.rand(2, n, generator=g) < 0.7
    mask[:, 0] = True
    bias = torch.randn(1, 2, n, n, generator=g)  # float32 relative position bias
    err = _term_error(
        "alpha_remix", {"alpha": 0.01, "beta": 1.0}, 0.01, 1.0, n, mask=mask, bias=bias
    )
    assert err <= 0.05, f"alpha_remix term off by {100 * err:.1f}%"


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_autocast_softmax_v_alpha0_is_standard_attention(masked):
    _, mask, (q, k, v) = make_inputs((2, 4, 32, 32, 8, 8), torch.bfloat16, masked, seed=12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        base = call("softmax", {}, q, k, v, mask)
        out = call("softmax_v", {"alpha": 0.0}, q, k, v, mask)
    assert out.dtype == torch.float32  # autocast's convention for precision-sensitive ops
    rows = real_query_rows(out, mask, 32)
    torch.testing.assert_close(  # bf16's own tolerance: bitwise equal on the CPUs tried
        rows, real_query_rows(base.float(), mask, 32), rtol=1.6e-2, atol=1e-5
    )


def test_autocast_split_product_uses_one_dropout_mask():
    # With V = 1 both halves [V, N softmax^T(V)] are all ones, so S_drop V and
    # S_drop (N softmax^T(V)) are equal exactly when they were dropped with the same mask;
    # then alpha=1, beta=-1/N gives exactly 0 (independent masks would not).
    n = 32
    g = torch.Generator().manual_seed(13)
    q, k = (torch.randn(2, 2, n, 8, generator=g).bfloat16() for _ in range(2))
    v = torch.ones(2, 2, n, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zero = call("alpha_remix", {"alpha": 1.0, "beta": -1.0 / n}, q, k, v, dropout_p=0.5)
        dropped = call("alpha_remix", {"alpha": 1.0, "beta": 0.0}, q, k, v, dropout_p=0.5)
    assert torch.equal(zero, torch.zeros_like(zero))
    # ... and dropout did run (without it every row of S V would sum to 1, i.e. 1/N here).
    assert not torch.allclose(dropped, torch.full_like(dropped, 1.0 / n))


def test_autocast_model_forward_and_backward():
    # The float32 result flows into the next autocast Linear; the pooling site (apply_to
    # "both") gets float32 values under autocast, which SDPA would run in bf16 too.
    from ablate.models import create_model

    torch.manual_seed(0)
    model = create_model("cct_2_3x2_32", variant="softmax_v:alpha=0.1", apply_to="both")
    x = torch.randn(2, 3, 32, 32)
    ref = model.eval()(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_builtin_variant_has_an_oracle_and_a_config():
    # A new built-in without an oracle or without a row in CONFIGS would skip the contract.
    builtins = {s.name for s in variants.list_attention() if s.source == "builtin"}
    assert builtins <= set(ORACLES), f"no float64 oracle for {sorted(builtins - set(ORACLES))}"
    assert builtins <= {name for name, _ in CONFIGS}, "a built-in variant has no CONFIGS row"
