"""The attention core alone: each variant's extra cost over softmax at one model's shapes.

Usage (from the repository root)::

    python benchmarks/attention_core.py --threads 2 --rounds 10

q, k and v are views of one (B, N, 3 * H * D) projection, as in a model's attention block
(defaults: cct_7_3x1_32 at batch 64: B 64, N 256 tokens, H 4 heads, D 64). Per variant it
times a training call (forward + backward, attention dropout 0.1, which sends CPU SDPA to its
math path) and an inference call, every variant once per round, round-robin; the overhead is
the median over rounds of the per-round time ratio to softmax (a drift in machine load hits
both alike). ``softmax_v_autograd`` is softmax_v written with plain autograd (masked token
softmax + lerp), the implementation before the fused node in ``variants/softmax_v.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import variants
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import variants
from variants import masked_token_softmax, register_attention, sdpa_mask

__all__ = ["main"]

AUTOGRAD = "softmax_v_autograd"


@register_attention(AUTOGRAD, params={"alpha": 1.0}, description="softmax_v via plain autograd")
def softmax_v_autograd(q, k, v, *, mask=None, bias=None, dropout_p=0.0, scale=None, alpha=1.0):
    """softmax_v through autograd: lerp(V, softmax^T(V), alpha), then SDPA."""
    remixed = torch.lerp(v, masked_token_softmax(v, mask), alpha)
    return F.scaled_dot_product_attention(
        q, k, remixed, attn_mask=sdpa_mask(mask, bias), dropout_p=dropout_p, scale=scale
    )


def _kwargs(name: str) -> dict:
    return {
        k: (None if v is None else torch.tensor(v))
        for k, v in variants.get_attention(name).params.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="64,256,4,64", help="B,N,H,D (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (default: 10)")
    parser.add_argument(
        "--variants",
        default=f"softmax,{AUTOGRAD},softmax_v,alpha_remix,softmax_v_scaled,laser,laser_remix,"
        "value_rmsnorm",
        help="comma-separated variant names, softmax first (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    b, n, h, d = (int(x) for x in args.shape.split(","))
    names = [x.strip() for x in args.variants.split(",") if x.strip()]
    x = torch.randn(b, n, 3 * h * d)
    grad = torch.randn(b, h, n, d)

    def qkv(t: torch.Tensor):
        return t.reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D)

    def train(name: str) -> None:
        t = x.clone().requires_grad_(True)
        q, k, v = qkv(t)
        fn = variants.get_attention(name).fn
        fn(q, k, v, dropout_p=0.1, scale=d**-0.5, **_kwargs(name)).backward(grad)

    def infer(name: str) -> None:
        with torch.inference_mode():
            q, k, v = qkv(x)
            variants.get_attention(name).fn(q, k, v, scale=d**-0.5, **_kwargs(name))

    kinds = {"train": train, "infer": infer}
    times = {(v, k): [] for v in names for k in kinds}
    for name in names:  # warm-up
        train(name)
        infer(name)
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for name in names:
            for kind, step in kinds.items():
                t0 = time.perf_counter()
                step(name)
                times[(name, kind)].append(time.perf_counter() - t0)
    print(
        f"shape B,N,H,D = {b},{n},{h},{d}; {torch.get_num_threads()} threads; {args.rounds} "
        f"rounds; load average {load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    print("| variant | train ms (min) | train overhead | infer ms (min) | infer overhead |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        row = [name]
        for kind in kinds:
            ours, base = times[(name, kind)], times[(names[0], kind)]
            ratio = statistics.median(o / r for o, r in zip(ours, base))
            row += [f"{1e3 * min(ours):.0f}", f"{100 * (ratio - 1):+.1f}%"]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
