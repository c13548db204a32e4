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
from variants.reference import naive_attention

# (registry name, parameter overrides, oracle alpha, oracle beta)
CONFIGS = [
    ("softmax", {}, 0.0, None),
    ("softmax_v", {}, 1.0, None),  # default alpha = 1: pure softmax^T(V)
    ("softmax_v", {"alpha": 0.3}, 0.3, None),
    ("alpha_remix", {}, 0.5, None),  # default alpha = 0.5, beta = 1 - alpha
    ("alpha_remix", {"alpha": 1.0, "beta": 1.0}, 1.0, 1.0),  # V + softmax^T(V)
    ("alpha_remix", {"alpha": -1.0, "beta": 1.0}, -1.0, 1.0),  # V - softmax^T(V)
    ("alpha_remix", {"alpha": 10.0, "beta": 0.0}, 10.0, 0.0),  # 10 * softmax^T(V)
    ("alpha_remix", {"alpha": 0.7, "beta": 2.5}, 0.7, 2.5),
]
CONFIG_IDS = [n + "".join(f"-{k}{v:g}" for k, v in p.items()) for n, p, _, _ in CONFIGS]

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
    name: str, params: dict, q, k, v, mask=None, dropout_p: float = 0.0, tensors: bool = True
):
    """Call a variant the way a model's attention site does: resolved parameters as 0-d
    tensors (float32 buffers, float64 for float64 inputs), derived ones (beta) as None."""
    spec = variants.get_attention(name)
    resolved = spec.resolve_params(params)
    pdtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    kwargs = {
        key: (None if val is None else torch.tensor(val, dtype=pdtype) if tensors else val)
        for key, val in resolved.items()
    }
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
@pytest.mark.parametrize(("name", "params", "alpha", "beta"), CONFIGS, ids=CONFIG_IDS)
def test_variant_matches_float64_oracle(name, params, alpha, beta, shape, masked):
    clean, mask, (q, k, v) = make_inputs(shape, torch.float64, masked)
    ref = naive_attention(*clean, mask=mask, alpha=alpha, beta=beta)
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


@pytest.mark.parametrize(("name", "params", "alpha", "beta"), CONFIGS, ids=CONFIG_IDS)
def test_bfloat16_inputs_stay_close_to_oracle(name, params, alpha, beta):
    # softmax^T(V) is computed in float32 under bf16, so the error stays at bf16 rounding.
    clean, mask, (q, k, v) = make_inputs((2, 2, 16, 16, 8, 8), torch.bfloat16, masked=True)
    ref = naive_attention(*clean, mask=mask, alpha=alpha, beta=beta)
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


@pytest.mark.parametrize(("name", "params", "alpha", "beta"), CONFIGS, ids=CONFIG_IDS)
def test_gradients_reach_qkv_and_match_oracle(name, params, alpha, beta):
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
    (naive_attention(qr, kr, vr, mask=mask, alpha=alpha, beta=beta) * weights).sum().backward()

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


@pytest.mark.parametrize(("name", "params"), [(c[0], c[1]) for c in CONFIGS[:4]])
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
