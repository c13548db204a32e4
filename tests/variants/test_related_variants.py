"""LASER, its alpha blend, value RMS-norm and N * softmax^T(V): properties beyond the oracle.

The float64-oracle, mask, bias, bf16 and gradient contract runs over these variants in
test_contract.py; here: exp(V) that would overflow, autocast in bf16 and fp16, exact alpha=0
endpoints (in training, with dropout), and the identities that tie the family together.
"""

from __future__ import annotations

import pytest
import torch

from tests.variants.test_contract import (
    CONFIGS,
    ONE_PER_VARIANT,
    call,
    make_inputs,
    oracle,
    real_query_rows,
)
from variants.reference import naive_attention, naive_laser


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_laser_does_not_overflow_where_exp_v_would(dtype, masked):
    # V around 200: exp(V) is inf in float32, bf16 and fp16 (float64 holds it: the oracle).
    clean, mask, (q, k, v) = make_inputs((2, 2, 12, 12, 8, 8), torch.float64, masked, seed=21)
    clean = (clean[0], clean[1], clean[2] + 200.0)
    v = v + 200.0
    assert torch.isinf(torch.exp(clean[2].float())).all()
    ref = naive_laser(*clean, mask=mask)
    out = call("laser", {}, q.to(dtype), k.to(dtype), v.to(dtype), mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # Relative to |V| ~ 200: a bf16/fp16 value itself is only good to ~0.4% there.
    tol = 1e-4 if dtype == torch.float32 else 2.0  # float32 spacing at 200 is 1.5e-5
    err = (real_query_rows(out.double(), mask, 12) - real_query_rows(ref, mask, 12)).abs().max()
    assert err <= tol, f"{dtype}: {err:.3g}"


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("name", "params"), ONE_PER_VARIANT, ids=lambda x: str(x))
def test_autocast_forward_close_and_gradients_finite(name, params, amp_dtype):
    clean, mask, inputs = make_inputs((2, 2, 16, 16, 8, 8), torch.float32, True, seed=22)
    q, k, v = (t.clone().requires_grad_(True) for t in inputs)
    with torch.autocast("cpu", dtype=amp_dtype):
        out = call(name, params, q.to(amp_dtype), k.to(amp_dtype), v.to(amp_dtype), mask)
    ref = oracle(name, params, *clean, mask=mask)
    scale = max(ref.abs().max().item(), 1.0)
    err = (real_query_rows(out.double(), mask, 16) - real_query_rows(ref, mask, 16)).abs().max()
    assert err <= 3e-2 * scale, f"{name} {amp_dtype}: error {err:.3g} vs scale {scale:.3g}"
    weights = mask[:, None, :, None].float()  # real query rows only
    (out.float() * weights).sum().backward()
    for t, label in ((q, "q"), (k, "k"), (v, "v")):
        assert t.grad is not None and torch.isfinite(t.grad).all(), f"{name}: {label} grad"
        assert t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["laser_remix", "softmax_v_scaled", "softmax_v", "alpha_remix"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_alpha0_is_bitwise_standard_attention_even_with_dropout(name, dropout_p):
    _, mask, (q, k, v) = make_inputs((2, 4, 9, 9, 8, 8), torch.float32, True, seed=23)
    torch.manual_seed(5)
    base = call("softmax", {}, q, k, v, mask, dropout_p=dropout_p)
    after_base = torch.rand(3)  # where the generator was left
    torch.manual_seed(5)
    out = call(name, {"alpha": 0.0}, q, k, v, mask, dropout_p=dropout_p)
    assert torch.equal(out, base)
    # The random stream advanced exactly as a softmax call would have advanced it.
    assert torch.equal(torch.rand(3), after_base)


def test_laser_remix_uses_one_dropout_mask_for_both_products():
    # V = 0: LASER = log(S_drop 1) and S_drop V = 0, so alpha=1 gives log of the dropped
    # rows' sums; with the SAME mask those are log(row sum of S_drop), which we rebuild from
    # a softmax call on V = 1 under the same seed.
    _, _, (q, k, _) = make_inputs((2, 2, 16, 16, 8, 8), torch.float32, False, seed=24)
    zeros, ones = torch.zeros(2, 2, 16, 8), torch.ones(2, 2, 16, 8)
    torch.manual_seed(9)
    out = call("laser_remix", {"alpha": 1.0}, q, k, zeros, dropout_p=0.5)
    torch.manual_seed(9)
    row_sums = call("softmax", {}, q, k, ones, dropout_p=0.5)
    expected = torch.log(row_sums.clamp_min(torch.finfo(torch.float32).tiny))
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(row_sums, ones)  # dropout did drop something


def test_laser_is_log_of_softmax_v_up_to_a_per_feature_constant():
    # S softmax^T(V) = S exp(V) / sum_t exp(V_t): the RFP's output is exp(LASER) / const.
    clean, mask, (q, k, v) = make_inputs((2, 2, 7, 7, 4, 4), torch.float64, True, seed=25)
    lse = call("laser", {}, q, k, v, mask)
    soft = call("softmax_v", {"alpha": 1.0}, q, k, v, mask)
    vv = clean[2].masked_fill(~mask[:, None, :, None], float("-inf"))
    column = torch.exp(vv).sum(dim=-2, keepdim=True)  # (B, H, 1, D)
    rows = real_query_rows
    torch.testing.assert_close(rows(torch.exp(lse) / column, mask, 7), rows(soft, mask, 7))


def test_value_rmsnorm_ignores_the_scale_of_each_token():
    (q, k, v), _, _ = make_inputs((2, 2, 6, 6, 8, 8), torch.float64, False, seed=26)
    per_token = torch.rand(2, 2, 6, 1, dtype=torch.float64) * 100 + 0.01
    torch.testing.assert_close(
        call("value_rmsnorm", {}, q, k, v * per_token), call("value_rmsnorm", {}, q, k, v)
    )


def test_softmax_v_scaled_is_n_times_softmax_v_and_padding_invariant():
    (q, k, v), _, _ = make_inputs((1, 2, 6, 6, 4, 4), torch.float64, False, seed=27)
    torch.testing.assert_close(
        call("softmax_v_scaled", {}, q, k, v), 6 * call("softmax_v", {"alpha": 1.0}, q, k, v)
    )
    # Three garbage pads appended: real rows unchanged (N counts real tokens, not 9).
    pad = torch.full((1, 2, 3, 4), 1e4, dtype=torch.float64)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    padded = call(
        "softmax_v_scaled",
        {},
        torch.cat([q, pad], 2),
        torch.cat([k, pad], 2),
        torch.cat([v, pad], 2),
        mask,
    )
    torch.testing.assert_close(padded[:, :, :6], call("softmax_v_scaled", {}, q, k, v))
    # ... which a plain 1/N-shrunk softmax_v scaled by the padded length would not give.
    assert not torch.allclose(padded[:, :, :6], 9 * call("softmax_v", {}, q, k, v))


def test_configs_cover_the_new_variants_against_their_oracles_not_standard_attention():
    # Guard against an oracle that silently equals standard attention.
    clean, mask, _ = make_inputs((2, 2, 6, 6, 4, 4), torch.float64, True, seed=28)
    plain = naive_attention(*clean, mask=mask)
    for name, params in CONFIGS:
        if name == "softmax":
            continue
        ref = oracle(name, params, *clean, mask=mask)
        keep = real_query_rows
        assert not torch.allclose(keep(ref, mask, 6), keep(plain, mask, 6), atol=1e-3), name


@pytest.mark.parametrize("beta", [None, 0.7], ids=["lerp", "beta"])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "scaled"])
@pytest.mark.parametrize("alpha_shape", [(), (2, 1, 1)], ids=["layer", "head"])
def test_fused_remix_backward_passes_gradcheck(beta, scaled, alpha_shape):
    # The hand-written backward of variants/_fused.py against finite differences, for V and
    # for alpha / beta (a learned alpha needs those), with a padding mask.
    from variants.softmax_v import real_tokens, remix_values_fused

    g = torch.Generator().manual_seed(29)
    v = torch.randn(2, 2, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    alpha = torch.full(alpha_shape, 0.4, dtype=torch.float64, requires_grad=True)
    b = None if beta is None else torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    count = real_tokens(v, mask).double() if scaled else None

    def fn(v, alpha, *rest):
        return remix_values_fused(v, mask, alpha, rest[0] if rest else None, count)

    inputs = (v, alpha) if b is None else (v, alpha, b)
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize(
    "variant",
    ["softmax_v_scaled", "laser", "laser_remix:alpha=0.5", "value_rmsnorm"],
)
def test_model_with_the_variant_at_both_sites_runs_under_bf16_autocast(variant):
    from ablate.models import create_model

    torch.manual_seed(0)
    model = create_model("cct_2_3x2_32", variant=variant, apply_to="both")
    x = torch.randn(2, 3, 32, 32)
    ref = model.eval()(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
