"""Overhead of ablate's injected attention in timm and Hugging Face models (forward + backward).

For each model, the library's own model (timm's ``Attention`` / ``WindowAttention``,
transformers with ``attn_implementation="sdpa"``) and the same weights with every attention
running ablate's ``softmax`` and ``softmax_v`` (alpha 0.5) sites are timed round-robin, one
training step (forward, loss, backward) each per round, so machine load hits all alike. The
table gives the median step in ms and the median over rounds of the per-round ratio to the
library's own model.

Usage (from the repository root)::

    python benchmarks/external_attention.py --threads 2 --rounds 7
    python benchmarks/external_attention.py --device cuda --batch 64 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

try:
    from ablate.models import create_model
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ablate.models import create_model

VARIANTS = ("softmax", "softmax_v:alpha=0.5")


def timm_cases(batch: int, device: str) -> dict[str, list[tuple[str, Callable[[], None]]]]:
    import timm

    archs = {
        "timm ViT-Tiny/16 @224": ("vit_tiny_patch16_224", {}),
        "timm Swin (2 stages) @112": (
            "swin_tiny_patch4_window7_224", dict(img_size=112, depths=(2, 2), num_heads=(3, 6)),
        ),
    }
    cases = {}
    for label, (name, kwargs) in archs.items():
        size = kwargs.get("img_size", 224)
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        lib = timm.create_model(name, num_classes=10, **kwargs).to(device)
        rows = [("library", _step(lib, x, y))]
        for variant in VARIANTS:
            ours = create_model(f"timm:{name}", num_classes=10, variant=variant, **kwargs)
            ours.model.load_state_dict(lib.state_dict())
            rows.append((f"ablate {variant}", _step(ours.to(device), x, y)))
        cases[label] = rows
    return cases


def hf_cases(batch: int, device: str) -> dict[str, list[tuple[str, Callable[[], None]]]]:
    import transformers

    tmp = tempfile.mkdtemp(prefix="ablate-bench-")
    cfg = transformers.BertConfig(
        vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=1024, max_position_embeddings=128, num_labels=4,
    )
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp)
    ids = torch.randint(1, 1000, (batch, 128), device=device)
    ids[: batch // 2, 64:] = 0  # half the batch padded: the mask path is exercised
    y = torch.randint(0, 4, (batch,), device=device)
    lib = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp, attn_implementation="sdpa"
    ).to(device)

    def lib_forward(t: torch.Tensor) -> torch.Tensor:
        return lib(input_ids=t, attention_mask=(t != 0).long()).logits

    rows = [("library (sdpa)", _step(lib, ids, y, lib_forward))]
    for variant in VARIANTS:
        ours = create_model(f"hf:{tmp}", num_classes=4, variant=variant, pretrained=True)
        rows.append((f"ablate {variant}", _step(ours.to(device), ids, y)))
    return {"HF BERT 4x256, 128 tokens": rows}


def _step(model, x, y, forward=None) -> Callable[[], None]:
    model.train()
    forward = forward or model

    def run() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(forward(x), y).backward()

    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(cases, rounds: int, device: str) -> None:
    for label, rows in cases.items():
        for _, fn in rows:  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name, _ in rows}
        for _ in range(rounds):
            for name, fn in rows:
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        base = rows[0][0]
        print(f"\n{label}")
        print(f"  {'attention':<26} {'ms / step':>10} {'vs library':>11}")
        for name, _ in rows:
            ratio = statistics.median(a / b for a, b in zip(times[name], times[base]))
            print(f"  {name:<26} {1e3 * statistics.median(times[name]):>10.1f} {ratio:>10.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads, "
          f"batch {args.batch}, {args.rounds} rounds (median)")
    measure(timm_cases(args.batch, args.device), args.rounds, args.device)
    measure(hf_cases(args.batch, args.device), args.rounds, args.device)


if __name__ == "__main__":
    main()
