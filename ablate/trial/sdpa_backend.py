"""Which kernel ``scaled_dot_product_attention`` actually ran: flash, efficient, cuDNN, math.

PyTorch picks the SDPA backend per call from the device, dtype, head dim, mask, dropout and
whether gradients are needed, and falls back to the unfused "math" path silently (on CPU,
for example, any attention dropout rules out the flash kernel). In an ablation the backend
decides speed and memory, so it is recorded per run (tag ``sdpa_backend``) and a variant
that forces the math path on CUDA is warned about.

Detection runs the code once under two interception modes and reads off what happened: a
``TorchFunctionMode`` counts calls of ``F.scaled_dot_product_attention``, a
``TorchDispatchMode`` sees the fused ATen kernels those calls dispatched to
(``_scaled_dot_product_flash_attention[_for_cpu]``, ``_efficient_attention``,
``_cudnn_attention``, ...), after autocast has cast the inputs. A call that reached no
fused kernel ran the math path (a composite of bmm / softmax that never appears as a kernel
of its own). Under ``torch.inference_mode`` the SDPA composite itself reaches the dispatch
mode, undecomposed; there the backend is PyTorch's own choice for those arguments
(``aten::_fused_sdp_choice``, the function the composite consults). No profiler is
involved, so there is no start-up cost and no log noise. Not for ``torch.compile``'d
modules (pass the eager model; inductor lowers SDPA to the same kernels).

Results are strings: one of :data:`BACKENDS`, several joined with "+" when calls differ
(e.g. "flash+math" when the encoder gets flash and sequence pooling does not), or "none"
when nothing called SDPA (e.g. the ``explicit`` baseline).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = ["BACKENDS", "SdpaMathWarning", "sdpa_backends_used", "probe_sdpa_backend",
           "probe_model_sdpa_backend", "warn_if_math"]  # fmt: skip

BACKENDS = ("flash", "efficient", "cudnn", "math", "overrideable")

# aten::_fused_sdp_choice's result (torch.nn.attention.SDPBackend values) -> our names.
_CHOICE = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}
# Forward kernels of the fused backends, by ATen name prefix (backward kernels are skipped).
_KERNELS = (
    ("aten::_scaled_dot_product_flash_attention", "flash"),
    ("aten::_scaled_dot_product_efficient_attention", "efficient"),
    ("aten::_scaled_dot_product_cudnn_attention", "cudnn"),
    ("aten::_scaled_dot_product_fused_attention_overrideable", "overrideable"),
    ("aten::_scaled_dot_product_attention_math_for_mps", "math"),  # a real kernel on MPS
)


class SdpaMathWarning(UserWarning):
    """Attention runs PyTorch's unfused math path on a GPU (slower, more memory)."""


def sdpa_backends_used(fn: Callable[[], Any]) -> str:
    """Run ``fn()`` once (e.g. a forward and backward pass of an eager model) and return the
    SDPA backend(s) its attention calls used, as described in the module docstring."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = 0
    fused: list[str] = []

    class _Calls(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            nonlocal calls
            if func is F.scaled_dot_product_attention:
                calls += 1
            return func(*args, **(kwargs or {}))

    class _Kernels(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = func.name()
            if name == "aten::scaled_dot_product_attention":  # not decomposed (inference mode)
                choice = int(torch.ops.aten._fused_sdp_choice(*args, **kwargs))
                fused.append(_CHOICE.get(choice, "math"))
            elif not name.endswith("_backward"):
                fused.extend(kind for prefix, kind in _KERNELS if name.startswith(prefix))
            return func(*args, **kwargs)

    with _Calls(), _Kernels():
        fn()
    found = set(fused)
    if calls > len(fused):  # calls that reached no kernel we know took the math path
        found.add("math")
    if not calls and not found:
        return "none"
    return "+".join(b for b in BACKENDS if b in found)


def probe_sdpa_backend(
    device: torch.device | str, dtype: torch.dtype, head_dim: int, dropout_p: float,
    with_mask: bool, *, num_heads: int = 4, seq_len: int = 64, batch: int = 2,
    requires_grad: bool = False, attention: Callable[..., torch.Tensor] | None = None,
) -> str:  # fmt: skip
    """The SDPA backend PyTorch picks for one call on random (batch, num_heads, seq_len,
    head_dim) tensors of ``dtype`` (the autocast dtype under AMP), with a key-padding mask
    (text models) or not, plus its backward when ``requires_grad`` (training can rule out
    kernels that inference gets). ``attention``: a variant with the registry signature
    (e.g. ``variants.get_attention("softmax_v").fn``); None calls SDPA directly."""
    device = torch.device(device)
    shape = (batch, num_heads, seq_len, head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=requires_grad)
               for _ in range(3))  # fmt: skip
    mask = None
    if with_mask:
        mask = torch.ones(batch, seq_len, dtype=torch.bool, device=device)
        mask[0, seq_len // 2 :] = False  # (B, N) True = real token

    def run() -> None:
        if attention is None:
            attn_mask = None if mask is None else mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            out = attention(q, k, v, mask=mask, dropout_p=dropout_p)
        if requires_grad:
            out.float().sum().backward()

    with _fork_rng(device):
        return sdpa_backends_used(run)


def _fork_rng(device: torch.device):
    """Save and restore the CPU RNG (and ``device``'s, on CUDA) around a probe."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    index = torch.cuda.current_device() if device.index is None else device.index
    return torch.random.fork_rng(devices=[index])


def probe_model_sdpa_backend(
    model: torch.nn.Module, inputs: torch.Tensor | tuple, *, dtype: torch.dtype | None = None,
    train: bool = True,
) -> str:  # fmt: skip
    """The SDPA backend(s) a model's attention uses: one step on a deep copy of the eager
    model (its weights, gradients, buffers and the global RNG streams stay as they were).

    Args:
        inputs: one small batch as the model takes it (a tensor or a tuple of arguments),
            on the model's device; two samples are enough.
        dtype: autocast dtype (e.g. torch.bfloat16) or None for none.
        train: forward + backward in training mode (dropout on), else one forward under
            ``torch.inference_mode`` in eval mode.
    """
    net = copy.deepcopy(model)
    net.train(train)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    device = next(net.parameters()).device

    def run() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if train:
                net(*args).float().sum().backward()
            else:
                with torch.inference_mode():
                    net(*args)

    with _fork_rng(device):
        return sdpa_backends_used(run)


def warn_if_math(backend: str, device: torch.device | str, *, what: str = "attention") -> bool:
    """Warn (:class:`SdpaMathWarning`, naming ``what``) and return True when ``backend``
    includes "math" on a CUDA device. On CPU the math path is normal in training (the CPU
    flash kernel takes no dropout), so nothing is said there."""
    if torch.device(device).type != "cuda" or "math" not in backend.split("+"):
        return False
    warnings.warn(
        f"{what}: scaled_dot_product_attention runs the unfused math kernel on CUDA "
        f"(backends used: {backend}), slower and heavier than flash / efficient attention; "
        "check the dtype (fused kernels need fp16/bf16 or a supported head dim), the mask "
        "and the dropout",
        SdpaMathWarning,
        stacklevel=2,
    )
    return True
