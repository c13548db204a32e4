"""Training and inference throughput (images/s) per model and attention variant.

Usage (from the repository root)::

    python benchmarks/throughput.py --models cct_7_3x1_32 --threads 2 --steps 3
    python benchmarks/throughput.py --models cct_7_3x1_32,cvt_7_4_32 --compile --device cuda

Besides the registered variants it measures ``explicit``: standard attention written the
textbook way (q @ k^T, softmax, dropout, @ v), registered here through the public
``register_attention`` decorator exactly as a third-party plug-in would be. Comparing it
with ``softmax`` shows what ``scaled_dot_product_attention`` buys.

All configurations are built first and then timed round-robin, one step each per round, so
that a change in machine load hits every configuration alike; the reported rate is the
batch size over the fastest timed step (``--stat min``, the step least disturbed by other
processes on a shared machine) or over the median step (``--stat median``). Ratios between
variants ("train / softmax", the targets) are the median over rounds of the ratio of the two
step times measured in the same round.

Targets (printed as PASS / MISS at the end):

- ``softmax_v`` and ``alpha_remix`` within 5% of ``softmax`` (training and inference); every
  other variant's overhead (extra step time vs softmax, same pairing) is printed as INFO;
- on 2 CPU threads, cct_7_3x1_32 training at least 1.2x faster with ``softmax`` (SDPA)
  than with ``explicit``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import variants
    from ablate.models import create_model
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import variants
    from ablate.models import create_model

__all__ = ["Result", "benchmark", "explicit_attention", "main"]

EXPLICIT = "explicit"
TOLERANCE = 0.05  # softmax_v / alpha_remix within 5% of softmax
# measured by default next to the targets: the related variants and a learned alpha
RELATED = (
    "softmax_v_scaled",
    "laser",
    "laser_remix",
    "value_rmsnorm",
    "softmax_v:alpha=learned,alpha_shape=head",
)
SDPA_SPEEDUP = 1.2  # softmax (SDPA) vs explicit, cct_7_3x1_32 training on 2 CPU threads


@variants.register_attention(
    EXPLICIT, description="textbook q @ k^T, softmax, dropout, @ v (no fused kernel)"
)
def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """Standard attention without scaled_dot_product_attention: the baseline SDPA must beat."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale  # (B, H, Nq, Nk)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = logits.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (B, H, Nq, Dv)


@dataclass
class Result:
    """Measured rates for one model x variant (images/s; None = not measured)."""

    model: str
    variant: str
    train: float | None = None
    infer: float | None = None
    train_compiled: float | None = None
    infer_compiled: float | None = None
    step_times: dict[str, list[float]] = field(default_factory=dict)
    # CUDA only: peak memory a step allocates on top of what was resident before it (all
    # configurations stay built, so the absolute peak would count the others' weights).
    peak_mib: dict[str, float] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_steps(
    name: str, variant: str, args: argparse.Namespace, device: torch.device
) -> dict[str, Callable[[], None]]:
    """The step functions of one configuration: train / infer, eager and (maybe) compiled."""
    torch.manual_seed(0)
    overrides = (
        {} if args.attention_dropout is None else {"attention_dropout": args.attention_dropout}
    )
    model = create_model(name, variant=variant, **overrides).to(device)
    size, chans, classes = (
        model.arch["img_size"],
        model.arch["in_chans"],
        model.arch["num_classes"],
    )
    x = torch.randn(args.batch_size, chans, size, size, device=device)
    y = torch.randint(0, classes, (args.batch_size,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=5.5e-4, weight_decay=0.06)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    def train_step(net: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            model.train()
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()

        return step

    def infer_step(net: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            model.eval()
            with torch.inference_mode(), autocast:
                net(x)

        return step

    steps = {"train": train_step(model), "infer": infer_step(model)}
    if args.compile:
        # Every configuration shares CompactTransformer.forward's code object, and each adds
        # a train and an eval entry to its cache: raise the limit so that none silently
        # falls back to eager.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        compiled = torch.compile(model)
        steps["train_compiled"] = train_step(compiled)
        steps["infer_compiled"] = infer_step(compiled)
    return steps


def benchmark(args: argparse.Namespace) -> list[Result]:
    """Build every configuration, warm it up, then time all of them round-robin."""
    device = torch.device(args.device)
    results: dict[tuple[str, str], Result] = {}
    jobs: list[tuple[Result, str, Callable[[], None]]] = []
    for name in args.models:
        for variant in args.variants:
            result = results[(name, variant)] = Result(name, variant)
            for kind, step in _make_steps(name, variant, args, device).items():
                jobs.append((result, kind, step))
    for result, kind, step in jobs:
        t0 = time.perf_counter()
        for _ in range(args.warmup):  # includes torch.compile's compilation
            step()
        _sync(device)
        if not args.quiet:
            print(
                f"  warm-up {result.model} {result.variant} {kind}: "
                f"{time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
            )
    for round_ in range(args.steps):
        for result, kind, step in jobs:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            result.step_times.setdefault(kind, []).append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak = (torch.cuda.max_memory_allocated(device) - resident) / 2**20
                result.peak_mib[kind] = max(result.peak_mib.get(kind, 0.0), peak)
        if not args.quiet:
            print(f"  round {round_ + 1}/{args.steps} done", file=sys.stderr)
    for result in results.values():
        for kind, times in result.step_times.items():
            best = min(times) if args.stat == "min" else statistics.median(times)
            setattr(result, kind, args.batch_size / best)
    if args.profile:
        for result, kind, step in jobs:
            print(
                f"\n== profile: {result.model} {result.variant} {kind}\n"
                + profile_step(step, device, args.profile)
            )
    return list(results.values())


def profile_step(step: Callable[[], None], device: torch.device, rows: int) -> str:
    """One step under torch.profiler: the ``rows`` operators with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device.type == "cuda" else []
    )
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def relative_speed(
    r: Result, kind: str, base: Result | None, base_kind: str | None = None
) -> float | None:
    """Speed of ``r`` relative to ``base`` (> 1 = faster): the median over rounds of the
    per-round time ratio. Both were timed in the same round, moments apart, so a drift in
    machine load cancels, which a ratio of two separately chosen step times would not."""
    ours = r.step_times.get(kind)
    ref = None if base is None else base.step_times.get(base_kind or kind)
    if not ours or not ref:
        return None
    return statistics.median(b / o for b, o in zip(ref, ours))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_table(results: list[Result], compiled: bool) -> str:
    """An aligned text table (also valid Markdown)."""
    header = [
        "model",
        "variant",
        "train img/s",
        "infer img/s",
        "train / softmax",
        "infer / softmax",
    ]
    if compiled:
        header += ["train img/s (compile)", "infer img/s (compile)", "compile speedup (train)"]
    base = {r.model: r for r in results if r.variant == "softmax"}
    rows = []
    for r in results:
        b = base.get(r.model)
        row = [
            r.model,
            r.variant,
            _fmt(r.train),
            _fmt(r.infer),
            _ratio(relative_speed(r, "train", b)),
            _ratio(relative_speed(r, "infer", b)),
        ]
        if compiled:
            row += [
                _fmt(r.train_compiled),
                _fmt(r.infer_compiled),
                _ratio(relative_speed(r, "train_compiled", r, "train")),
            ]
        rows.append(row)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    left = {0, 1}

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i in left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if i not in left else "-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def check_targets(results: list[Result], args: argparse.Namespace) -> list[tuple[str, str]]:
    """(PASS / MISS / INFO, one line) for every target that this run measured."""
    checks: list[tuple[str, str]] = []
    base = {r.model: r for r in results if r.variant == "softmax"}
    for r in results:
        b = base.get(r.model)
        if b is not None and r.variant not in ("softmax", "softmax_v", "alpha_remix", EXPLICIT):
            checks += _overheads(r, b)
        if b is None or r.variant not in ("softmax_v", "alpha_remix"):
            continue
        for kind in ("train", "infer", "train_compiled", "infer_compiled"):
            ratio = relative_speed(r, kind, b)
            if ratio is None:
                continue
            checks.append(
                (
                    "PASS" if ratio >= 1 - TOLERANCE else "MISS",
                    f"{r.model} {r.variant} {kind}: {ratio:.3f} x softmax "
                    f"(target >= {1 - TOLERANCE:.2f})",
                )
            )
    on_two_cpu_threads = args.device == "cpu" and torch.get_num_threads() == 2
    explicit = {r.model: r for r in results if r.variant == EXPLICIT}
    if "cct_7_3x1_32" in base and "cct_7_3x1_32" in explicit:
        speedup = relative_speed(base["cct_7_3x1_32"], "train", explicit["cct_7_3x1_32"])
        where = (
            "2 CPU threads"
            if on_two_cpu_threads
            else f"{args.device}, {torch.get_num_threads()} threads (target is for 2 CPU threads)"
        )
        status = "PASS" if speedup >= SDPA_SPEEDUP else "MISS"
        checks.append(
            (
                status if on_two_cpu_threads else "INFO",
                f"cct_7_3x1_32 train, SDPA vs explicit: {speedup:.3f}x on {where} "
                f"(target >= {SDPA_SPEEDUP})",
            )
        )
    for r in results:
        if r.variant == EXPLICIT and r.model in base and r.model != "cct_7_3x1_32":
            checks.append(
                (
                    "INFO",
                    f"{r.model} train, SDPA vs explicit: "
                    f"{relative_speed(base[r.model], 'train', r):.3f}x",
                )
            )
    return checks


def _overheads(r: Result, base: Result) -> list[tuple[str, str]]:
    """INFO lines: extra step time of ``r`` vs softmax, per measured kind."""
    lines = []
    for kind in ("train", "infer", "train_compiled", "infer_compiled"):
        ratio = relative_speed(r, kind, base)
        if ratio is not None:
            lines.append(("INFO", f"{r.model} {r.variant} {kind}: {100 / ratio - 100:+.1f}% time"))
    return lines


def _load() -> str:
    """The 1/5/15-minute load averages (other processes on a shared machine)."""
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{cpu}, {os.cpu_count()} logical CPUs"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return "; ".join(parts)


def split_variants(text: str) -> list[str]:
    """``softmax,alpha_remix:alpha=1,beta=1,laser`` -> three variants: an item with ``=`` and
    no ``:`` (or inside ``[...]``) continues the previous variant's parameters."""
    out: list[str] = []
    depth = 0
    for item in text.split(","):
        item = item.strip()
        continues = out and (depth > 0 or ("=" in item and ":" not in item))
        depth += item.count("[") - item.count("]")
        if continues:
            out[-1] += "," + item
        elif item:
            out.append(item)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default="cct_7_3x1_32",
        help="comma-separated model names (default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        default=f"softmax,softmax_v,alpha_remix,{','.join(RELATED)},{EXPLICIT}",
        help="comma-separated variants (with their parameters, e.g. alpha_remix:alpha=1,beta=1); "
        "'explicit' is the non-fused baseline "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=128, help="images per step (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=5, help="timed steps per configuration (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed steps first, compilation included (default: %(default)s)",
    )
    parser.add_argument(
        "--stat",
        choices=("min", "median"),
        default="min",
        help="step time to report: fastest (robust to other load) or median "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="default: %(default)s",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also measure torch.compile'd models (extra columns)",
    )
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="override the models' attention dropout (default: the official 0.1)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="after timing, profile one step of every configuration and print its top ROWS "
        "operators",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results to this JSON file"
    )
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.variants = split_variants(args.variants)
    for flag, value, low in (
        ("--batch-size", args.batch_size, 1),
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
    ):
        if value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    known_models = set(
        __import__("ablate.models", fromlist=["list_models"]).list_models(include_aliases=True)
    )
    for m in args.models:
        if m not in known_models:
            parser.error(f"unknown model {m!r}; see `ablate models` for the valid names")
    for v in args.variants:
        try:
            variants.parse_variant(v)
        except ValueError as err:
            parser.error(str(err))
    try:
        torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device: {err}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"machine: {_machine()}; at start: {_load()}")
    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps "
        f"({args.stat}), attention dropout "
        f"{'default (0.1)' if args.attention_dropout is None else args.attention_dropout}"
        + (", bf16 autocast" if args.amp else "")
    )
    t0 = time.perf_counter()
    results = benchmark(args)
    print()
    print(render_table(results, args.compile))
    print()
    checks = check_targets(results, args)
    for status, text in checks:
        print(f"{status}  {text}")
    print(f"\n(total {time.perf_counter() - t0:.0f}s; at the end: {_load()})")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": _machine(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "args": {
                        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    },
                    "results": [asdict(r) for r in results],
                    "targets": [{"status": s, "check": t} for s, t in checks],
                },
                indent=2,
            )
        )
    return 1 if args.fail_on_miss and any(s == "MISS" for s, _ in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
