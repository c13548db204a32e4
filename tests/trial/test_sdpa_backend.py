"""SDPA backend detection on real kernels: CPU here, CUDA under the gpu marker."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import variants
from ablate.models import create_model
from ablate.trial.sdpa_backend import (
    SdpaMathWarning,
    probe_model_sdpa_backend,
    probe_sdpa_backend,
    sdpa_backends_used,
    warn_if_math,
)


def test_cpu_flash_without_dropout_math_with_dropout():
    # PyTorch's CPU flash kernel takes no dropout: with it every call falls back to math.
    assert probe_sdpa_backend("cpu", torch.float32, 64, 0.0, False) == "flash"
    assert probe_sdpa_backend("cpu", torch.float32, 64, 0.0, True, requires_grad=True) == "flash"
    assert probe_sdpa_backend("cpu", torch.float32, 64, 0.1, False, requires_grad=True) == "math"


def test_variants_and_the_explicit_baseline():
    softmax_v = variants.get_attention("softmax_v").fn
    assert probe_sdpa_backend("cpu", torch.float32, 32, 0.0, True, attention=softmax_v) == "flash"

    def explicit(q, k, v, *, mask=None, dropout_p=0.0):  # no SDPA anywhere
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v

    assert probe_sdpa_backend("cpu", torch.float32, 32, 0.0, False, attention=explicit) == "none"


def test_calls_with_different_backends_are_all_reported():
    q = torch.randn(2, 2, 16, 8)

    def two_calls() -> None:
        F.scaled_dot_product_attention(q, q, q)  # flash on CPU
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)  # math on CPU

    assert sdpa_backends_used(two_calls) == "flash+math"
    assert sdpa_backends_used(lambda: q @ q.transpose(-2, -1)) == "none"


@pytest.mark.parametrize("grad_mode", ["grad", "no_grad", "inference_mode"])
def test_agrees_with_the_profiler_on_what_ran(grad_mode):
    from torch.profiler import ProfilerActivity, profile

    kernels = {
        "aten::_scaled_dot_product_flash_attention_for_cpu": "flash",
        "aten::_scaled_dot_product_attention_math": "math",
    }
    q = torch.randn(2, 2, 16, 8, requires_grad=grad_mode == "grad")
    mask = torch.rand(2, 1, 1, 16) > 0.3
    for kwargs in ({}, {"dropout_p": 0.2}, {"attn_mask": mask}, {"is_causal": True}):
        context = {
            "grad": torch.enable_grad,
            "no_grad": torch.no_grad,
            "inference_mode": torch.inference_mode,
        }[grad_mode]

        def call(kwargs=kwargs, context=context) -> None:
            with context():
                F.scaled_dot_product_attention(q, q, q, **kwargs)

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        ran = {kernels[e.name] for e in prof.events() if e.name in kernels}
        assert sdpa_backends_used(call) == "+".join(sorted(ran, key=["flash", "math"].index))


def test_model_probe_leaves_the_model_and_rng_untouched():
    torch.manual_seed(0)
    model = create_model("cct_2_3x2_32", variant="softmax_v")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    rng = torch.get_rng_state()
    # training: attention dropout 0.1 -> math on CPU; evaluation: flash in the encoder, math
    # in sequence pooling (q / k have head dim 1, v has C: no fused kernel takes that)
    assert probe_model_sdpa_backend(model, x, train=True) == "math"
    assert probe_model_sdpa_backend(model, x, train=False) == "flash+math"
    assert probe_model_sdpa_backend(model, x, dtype=torch.bfloat16, train=False) == "flash+math"
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_warn_if_math_only_on_cuda():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_math("math", "cpu") is False
        assert warn_if_math("flash", "cuda") is False
        assert warn_if_math("none", "cuda:0") is False
    with pytest.warns(SdpaMathWarning, match="variant softmax_v: .*math kernel on CUDA"):
        assert warn_if_math("flash+math", "cuda", what="variant softmax_v") is True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_precision_gets_a_fused_kernel():
    for dtype in (torch.bfloat16, torch.float16):
        for dropout in (0.0, 0.1):
            got = probe_sdpa_backend("cuda", dtype, 64, dropout, False, requires_grad=True)
            assert got in ("flash", "efficient", "cudnn"), (dtype, dropout, got)
    model = create_model("cct_7_3x1_32", variant="softmax").cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    got = probe_model_sdpa_backend(model, x, dtype=torch.bfloat16, train=True)
    assert "math" not in got.split("+"), got
