"""One command that checks ablate on a GPU machine: tests, numerics, throughput, a study.

Usage (from the repository root)::

    python benchmarks/gpu_check.py                          # on a CUDA machine: everything
    python benchmarks/gpu_check.py --device cpu --quick     # the same report, tiny, < 1 min

Steps (``--steps`` picks a subset):

1. ``tests``: ``pytest -m gpu`` (skipped without CUDA: those tests need a GPU).
2. ``numerics``: every built-in variant (the published alpha / beta settings included) in
   float32, bfloat16 and float16 against the float64 oracle ``variants.reference``, at the
   shapes of the encoder, of sequence pooling and of a padded text batch: relative error of
   the output and of the q / k / v gradients, PASS / FAIL against a tolerance per dtype.
3. ``throughput``: cct_2_3x2_32 and cct_7_3x1_32 x {softmax, softmax_v, alpha_remix} x
   {eager, compile} x {fp32, bf16}, next to the textbook ``explicit`` attention of the same
   model; training and inference img/s, peak memory per step, and the SDPA backend that
   ran (``ablate.trial.sdpa_backend``). Timing and the ``explicit`` variant come from
   ``benchmarks/throughput.py`` (round-robin, fastest step, paired ratios).
4. ``study``: ``studies/seqpool_rfp.yaml`` (25 trials) shortened to a few epochs on
   synthetic CIFAR-shaped data (an ImageFolder written to a temporary directory, no
   download), run through ``python -m ablate study``; trials per hour, GPU utilisation
   (nvidia-smi) and the projected time of the full 200-epoch study.

Results go to ``--out`` (default ``benchmarks/results/``) as ``gpu_check-<device>-<time>``
``.json`` and ``.md``, with a header naming the machine, GPU, driver, torch and git commit.
Exit status 1 when a test, a numerics check or the study failed.

``--quick`` shrinks every step (batch 2, 1 + 1 steps, 1 epoch, 2 trials on 96 images) so
that the whole report is produced in well under a minute on one CPU core; on CPU it skips
``torch.compile`` (inductor takes 20-90 s per configuration there; the rows stay, marked).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import throughput  # noqa: E402  (registers the ``explicit`` variant)

import variants  # noqa: E402
from ablate.tracking.conventions import EPOCH_SECONDS  # noqa: E402
from ablate.trial.sdpa_backend import probe_model_sdpa_backend  # noqa: E402

__all__ = ["THROUGHPUT_COLUMNS", "NUMERICS_COLUMNS", "main"]

STEPS = ("tests", "numerics", "throughput", "study")
MODELS = ("cct_2_3x2_32", "cct_7_3x1_32")
VARIANTS = ("softmax", "softmax_v", "alpha_remix", throughput.EXPLICIT)
MODES = ("eager", "compile")
DTYPES = ("fp32", "bf16")

THROUGHPUT_COLUMNS = (
    "model", "variant", "mode", "dtype", "train img/s", "infer img/s",
    "train / explicit", "infer / explicit", "train peak MiB", "infer peak MiB",
    "sdpa train", "sdpa infer", "note",
)  # fmt: skip
NUMERICS_COLUMNS = (
    "variant", "case", "dtype", "backend", "out rel err", "grad rel err", "tolerance", "status",
)  # fmt: skip
STUDY_KEYS = (
    "status", "trials", "trials_finished", "workers", "epochs", "train_images", "wall_s",
    "trials_per_hour", "gpu_util_mean", "gpu_util_max", "epoch_s", "trial_overhead_s",
    "full_epochs", "projected_full_h", "note",
)  # fmt: skip

# Variants and parameter settings checked against the oracle: the built-ins at their
# defaults and the published seqpool_rfp grid.
NUMERIC_VARIANTS = (
    ("softmax", {}),
    ("softmax_v", {"alpha": 1.0}),
    ("softmax_v", {"alpha": 0.25}),
    ("alpha_remix", {"alpha": 0.5}),
    ("alpha_remix", {"alpha": 10.0, "beta": 0.0}),
    ("alpha_remix", {"alpha": 1.0, "beta": 1.0}),
    ("alpha_remix", {"alpha": -1.0, "beta": 1.0}),
)
NUMERIC_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Relative Frobenius error allowed (output; gradients get 3x): about 4x what the CPU
# kernels reach (bf16 2-3e-3, fp16 2-4e-4, fp32 2-4e-7: rounding of the inputs' format over
# a softmax and two matmuls). fp32 at 1e-4 also catches TF32 matmuls sneaking in.
TOLERANCE = {"fp32": 1e-4, "bf16": 1.6e-2, "fp16": 2e-3}


# ------------------------------------------------------------------------------ header


def _run(cmd: list[str], **kwargs: Any) -> str:
    """stdout of a command, '' if it cannot run (missing tool, no repository, ...)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def header(device: torch.device) -> dict[str, str]:
    """Machine, GPU, driver, software versions and git commit (the airbench header)."""
    import torchvision

    commit = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT) or "unknown"
    if commit != "unknown" and _run(["git", "status", "--porcelain"], cwd=ROOT):
        commit += " (+ uncommitted changes)"
    gpu = driver = "n/a"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        out = _run(query)
        driver = out.splitlines()[0] if out else "unknown"
    memory = "unknown"
    try:
        pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = f"{pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{throughput._machine().split('; GPU')[0]}, {memory}",
        "device": str(device),
        "gpu": gpu,
        "driver": driver,
        "torch cuda build": torch.version.cuda or "n/a",
        "torch cudnn build": str(torch.backends.cudnn.version() or "n/a"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
        "git commit": commit,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


# ------------------------------------------------------------------------------- tests


def run_tests(device: torch.device) -> dict[str, Any]:
    """``pytest -m gpu`` in a subprocess; its summary line and return code."""
    if device.type != "cuda":
        return {"status": "skipped", "summary": "no CUDA device (the gpu tests need one)"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else done.stderr.strip()[-300:]
    # pytest: 0 all passed, 5 nothing collected (no gpu tests: not a failure here)
    ok = done.returncode in (0, 5)
    return {
        "status": "passed" if ok else "failed",
        "summary": summary,
        "returncode": done.returncode,
        "seconds": round(time.perf_counter() - t0, 1),
        "output_tail": "" if ok else done.stdout[-4000:],
    }


# ---------------------------------------------------------------------------- numerics


def _numeric_cases(quick: bool) -> dict[str, dict[str, Any]]:
    """Shapes of the three attention sites: (B, H, N, D) for q / k / v, mask, scale."""
    b = 2 if quick else 16
    return {
        # CCT-7/3x1 encoder: 256 tokens, 4 heads of 64 (cct_2: 64 tokens, 2 x 64)
        "encoder": {"q": (b, 4, 64 if quick else 256, 64), "v_dim": 64, "mask": False},
        # sequence pooling: one query, scores as keys (head dim 1), V = the tokens (dim C)
        "seqpool": {"q": (b, 1, 1, 1), "k": (b, 1, 64 if quick else 256, 1),
                    "v_dim": 128 if quick else 256, "mask": False, "scale": 1.0},
        # text: padded batch, key-padding mask
        "masked": {"q": (b, 2 if quick else 4, 48 if quick else 64, 32), "v_dim": 32,
                   "mask": True},
    }  # fmt: skip


def _rel(err: torch.Tensor, ref: torch.Tensor) -> float:
    return float(err.norm() / ref.norm().clamp_min(1e-30))


def check_numerics(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    """Every variant x dtype x case against the float64 oracle: relative errors."""
    from ablate.trial.sdpa_backend import sdpa_backends_used
    from variants.reference import naive_attention

    rows = []
    g = torch.Generator().manual_seed(0)
    for case, spec in _numeric_cases(quick).items():
        q_shape = spec["q"]
        k_shape = spec.get("k", q_shape)
        v_shape = (*k_shape[:3], spec["v_dim"])
        base = [torch.randn(s, generator=g, dtype=torch.float64) for s in (q_shape, k_shape)]
        base.append(torch.randn(v_shape, generator=g, dtype=torch.float64))
        if case == "seqpool":
            base[0] = torch.ones(q_shape, dtype=torch.float64)  # the pooling query is 1
        mask = None
        if spec["mask"]:
            n = k_shape[2]
            lengths = torch.randint(n // 3, n + 1, (k_shape[0],), generator=g)
            mask = torch.arange(n)[None, :] < lengths[:, None]  # (B, N) True = real token
            mask[0] = True  # one row without padding
        grad_out = torch.randn(*q_shape[:3], spec["v_dim"], generator=g, dtype=torch.float64)
        scale = spec.get("scale")
        for name, params in NUMERIC_VARIANTS:
            fn = variants.get_attention(name).fn
            settings = ",".join(f"{k}={v:g}" for k, v in params.items())
            label = f"{name}:{settings}" if settings else name
            alpha = params.get("alpha", 0.0)
            for dtype_name, dtype in NUMERIC_DTYPES.items():
                # Inputs rounded to the dtype first: only the kernel's own error is measured.
                ins = [t.to(dtype).to(device).requires_grad_() for t in base]
                ref_ins = [t.detach().cpu().double().requires_grad_() for t in ins]
                dev_mask = None if mask is None else mask.to(device)
                kwargs = {k: torch.tensor(v, device=device) for k, v in params.items()}
                outs = []

                def step(fn=fn, ins=ins, dev_mask=dev_mask, kwargs=kwargs, outs=outs) -> None:
                    out = fn(*ins, mask=dev_mask, scale=scale, **kwargs)
                    out.backward(grad_out.to(device, out.dtype))
                    outs.append(out.detach().cpu().double())

                backend = sdpa_backends_used(step)
                ref = naive_attention(
                    *ref_ins, mask=mask, scale=scale, alpha=alpha, beta=params.get("beta")
                )
                ref.backward(grad_out)
                ref = ref.detach()
                err = outs[0] - ref
                if mask is not None:  # outputs at padded query positions are don't-care
                    keep = mask[:, None, :, None].expand_as(ref)
                    err, ref = err[keep], ref[keep]
                out_err = _rel(err, ref)
                grad_err = max(
                    _rel(a.grad.cpu().double() - r.grad, r.grad)
                    for a, r in zip(ins, ref_ins, strict=True)
                )
                tol = TOLERANCE[dtype_name]
                ok = out_err <= tol and grad_err <= 3 * tol
                rows.append(
                    {
                        "variant": label,
                        "case": case,
                        "dtype": dtype_name,
                        "backend": backend,
                        "out rel err": out_err,
                        "grad rel err": grad_err,
                        "tolerance": tol,
                        "status": "PASS" if ok else "FAIL",
                    }
                )
    return rows


# -------------------------------------------------------------------------- throughput


def _backends(
    model_name: str, variant: str, device: torch.device, dtypes: list[str]
) -> dict[str, tuple[str, str]]:
    """Per dtype: SDPA backend(s) of a training step and an inference step (eager model)."""
    from ablate.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, variant=variant).to(device)
    size, chans = model.arch["img_size"], model.arch["in_chans"]
    x = torch.randn(2, chans, size, size, device=device)
    found = {}
    for dtype in dtypes:
        amp = torch.bfloat16 if dtype == "bf16" else None
        found[dtype] = (
            probe_model_sdpa_backend(model, x, dtype=amp, train=True),
            probe_model_sdpa_backend(model, x, dtype=amp, train=False),
        )
    return found


def measure_throughput(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """The throughput table: one row per model x variant x mode x dtype."""
    compile_on = "compile" in args.modes and not (args.quick and device.type == "cpu")
    backends = {
        (m, v): _backends(m, v, device, args.dtypes) for m in args.models for v in args.variants
    }
    rows = []
    for dtype in args.dtypes:
        bench_args = argparse.Namespace(
            models=list(args.models),
            variants=list(args.variants),
            batch_size=args.batch_size,
            steps=args.timed_steps,
            warmup=args.warmup,
            stat="min",
            device=str(device),
            compile=compile_on,
            amp=dtype == "bf16",
            attention_dropout=None,
            quiet=args.quiet,
            profile=0,
        )
        results = throughput.benchmark(bench_args)
        by_key = {(r.model, r.variant): r for r in results}
        for r in results:
            base = by_key.get((r.model, throughput.EXPLICIT))
            sdpa_train, sdpa_infer = backends[(r.model, r.variant)][dtype]
            for mode in args.modes:
                train_kind, infer_kind = (
                    ("train", "infer") if mode == "eager" else ("train_compiled", "infer_compiled")
                )
                note = ""
                if mode == "compile" and not compile_on:
                    note = "skipped: --quick on CPU (inductor compiles 20-90 s per configuration)"
                elif mode == "compile":
                    note = "sdpa columns: eager model"
                row = {
                    "model": r.model,
                    "variant": r.variant,
                    "mode": mode,
                    "dtype": dtype,
                    "train img/s": getattr(r, train_kind),
                    "infer img/s": getattr(r, infer_kind),
                    "train / explicit": throughput.relative_speed(r, train_kind, base),
                    "infer / explicit": throughput.relative_speed(r, infer_kind, base),
                    "train peak MiB": r.peak_mib.get(train_kind),
                    "infer peak MiB": r.peak_mib.get(infer_kind),
                    "sdpa train": sdpa_train,
                    "sdpa infer": sdpa_infer,
                    "note": note,
                }
                rows.append(row)
    return rows


# ------------------------------------------------------------------------------- study

CIFAR_TRAIN_IMAGES = 50_000  # CIFAR-10's training split, which the synthetic set imitates


def write_synthetic_folder(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """A CIFAR-shaped ImageFolder: 10 classes of 32x32 RGB PNGs, learnable but not trivial.

    Each class has its own mean colour and stripe frequency; every image adds noise and a
    random phase, so accuracy rises above chance within an epoch or two.
    """
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(10, 3, 1, 1, generator=g) * 160 + 48  # (10, 3, 1, 1)
    xs = torch.arange(32, dtype=torch.float32)

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        phase = torch.rand(n, 1, 1, 1, generator=g) * 6.3
        freq = (y.float() + 1)[:, None, None, None] * 0.3
        stripes = 40 * torch.sin(freq * xs[None, None, None, :] + phase)  # (n, 1, 1, 32)
        noise = torch.randn(n, 3, 32, 32, generator=g) * 30
        x = (colours[y] + stripes + noise).clamp(0, 255).to(torch.uint8)  # (n, 3, 32, 32)
        return x.permute(0, 2, 3, 1).contiguous(), y  # HWC for Pillow

    jobs = []
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = images(n)
        for c in range(10):
            (root / split / f"class_{c}").mkdir(parents=True, exist_ok=True)
        jobs += [(root / split / f"class_{int(y[i])}" / f"{i}.png", x[i]) for i in range(n)]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: Image.fromarray(job[1].numpy()).save(job[0]), jobs))


class GpuSampler:
    """GPU utilisation (%) sampled once a second in a thread (nvidia-smi, else pynvml)."""

    def __init__(self, device: torch.device, interval: float = 1.0) -> None:
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> float | None:
        out = _run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"])
        values = [float(v) for v in out.split() if re.fullmatch(r"[\d.]+", v)]
        if values:  # every GPU the study may use: their mean
            return statistics.fmean(values)
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # no pynvml / driver query: report n/a
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._sample()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "GpuSampler":
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _trial_runs(tracking_uri: str) -> list[dict[str, Any]]:
    """Per trial (runs with an epoch-time curve): status, wall time, epoch times."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    trials = []
    for run in client.search_runs(ids, max_results=1000):
        if EPOCH_SECONDS not in run.data.metrics:
            continue
        epochs = [m.value for m in client.get_metric_history(run.info.run_id, EPOCH_SECONDS)]
        end = run.info.end_time or run.info.start_time
        trials.append(
            {
                "status": run.info.status,
                "wall_s": (end - run.info.start_time) / 1000,
                "epoch_s": epochs,
            }
        )
    return trials


def run_study(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """The shortened study through ``python -m ablate study``, timed and projected."""
    import yaml

    spec = yaml.safe_load(Path(args.study_file).read_text())
    base = dict(spec.get("base") or {})
    grid = spec.get("grid") or {}
    # Trials in the whole study: one per grid cell (else the file's n_trials).
    study_trials = math.prod(len(v) for v in grid.values()) if grid else spec.get("n_trials", 1)
    full_epochs = int(base.get("epochs", 200))
    epochs = args.study_epochs
    data = work / "synthetic_cifar"
    write_synthetic_folder(data, args.study_train_size, args.study_test_size)
    base.update(
        dataset=f"folder:{data}",
        epochs=epochs,
        # the recipe a cifar10 run gets, spelled out (a folder's "auto" is crop + flip)
        augment="randaugment",
        mixup=0.8,
        cutmix=1.0,
        warmup_epochs=round(float(base.get("warmup_epochs", 0)) * epochs / full_epochs, 4),
        checkpoint_dir=str(work / "checkpoints"),
        quiet=True,
    )
    if args.quick:
        base["batch_size"] = 32
    spec.update(name=f"{spec.get('name', 'study')}_gpu_check", base=base)
    spec.pop("storage", None)
    study_file = work / "study.yaml"
    study_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [
        sys.executable, "-m", "ablate", "study", str(study_file),
        "--storage", f"sqlite:///{work / 'optuna.db'}", "--tracking-uri", tracking, "--quiet",
    ]  # fmt: skip
    if device.type == "cpu":
        cmd += ["--devices", "cpu"]
    if args.study_trials:
        cmd += ["--trials", str(args.study_trials)]
    if args.study_workers:
        cmd += ["--workers", str(args.study_workers)]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    t0 = time.perf_counter()
    with GpuSampler(device) as sampler:
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {
        "status": "passed" if done.returncode == 0 else "failed",
        "trials": min(args.study_trials or study_trials, study_trials),
        "workers": args.study_workers or "default",
        "epochs": epochs,
        "train_images": args.study_train_size,
        "wall_s": wall,
        "full_epochs": full_epochs,
        # percent, sampled every second; "n/a" without a GPU or a way to query it
        "gpu_util_mean": statistics.fmean(sampler.samples) if sampler.samples else "n/a",
        "gpu_util_max": max(sampler.samples) if sampler.samples else "n/a",
        "command": " ".join(cmd),
    }
    if done.returncode != 0:
        result["output_tail"] = (done.stdout + done.stderr)[-4000:]
    trials = _trial_runs(tracking)
    finished = [t for t in trials if t["status"] == "FINISHED"]
    result["trials_finished"] = len(finished)
    result["trials_per_hour"] = len(finished) / wall * 3600 if finished else None
    if not finished:
        result["status"] = "failed"
        return result
    # Epoch time: median over trials of the median epoch after the first (warm-up) one.
    epoch_s = statistics.median(
        statistics.median(t["epoch_s"][1:] or t["epoch_s"]) for t in finished
    )
    overhead = statistics.median(max(0.0, t["wall_s"] - sum(t["epoch_s"])) for t in finished)
    scale = max(1.0, CIFAR_TRAIN_IMAGES / args.study_train_size)  # per-epoch work vs CIFAR-10
    short = overhead + epochs * epoch_s
    full = overhead + full_epochs * epoch_s * scale
    # The whole study at the concurrency this run had: measured wall time per trial, each
    # trial stretched from `epochs` to `full_epochs` epochs.
    projected = wall / len(finished) * study_trials * full / short
    result.update(
        epoch_s=epoch_s,
        trial_overhead_s=overhead,
        projected_full_h=projected / 3600,
        note=(
            ("rough (--quick): " if args.quick else "")
            + f"{study_trials} trials x {full_epochs} epochs at this run's concurrency"
            + (
                f"; epoch time scaled x{scale:.0f} from {args.study_train_size} images"
                if scale > 1
                else ""
            )  # fmt: skip
        ),
    )
    return result


# ----------------------------------------------------------------------------- report


def _cell(value: Any, spec: str = ",.1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown_table(columns: tuple[str, ...], rows: list[dict[str, Any]], formats: dict) -> str:
    """A Markdown table (aligned, so it also reads as plain text); floats as ``formats``."""
    cells = [[_cell(r.get(c), formats.get(c, ",.1f")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(_is_number(r.get(c)) for r in rows) for c in columns]

    def line(values: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
            )
            + " |"
        )

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else "-" * (w + 2)
                         for w, num in zip(widths, numeric)) + "|"  # fmt: skip
    return "\n".join([line(list(columns)), sep] + [line(row) for row in cells])


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def render_markdown(report: dict[str, Any]) -> str:
    """The whole report as Markdown: header, then one section per step that ran."""
    h = report["header"]
    out = [f"# gpu_check: {h['gpu'] if h['gpu'] != 'n/a' else h['machine']}", ""]
    out += [f"- **{k}**: {v}" for k, v in h.items()]
    out += ["", f"Overall: **{report['status']}** ({report['seconds']:.0f} s)", ""]
    if "tests" in report:
        t = report["tests"]
        out += ["## GPU tests (pytest -m gpu)", "", f"{t['status']}: {t['summary']}", ""]
    if "numerics" in report:
        rows = report["numerics"]
        fails = sum(r["status"] == "FAIL" for r in rows)
        out += [
            "## Numerics against the float64 oracle",
            "",
            f"{len(rows) - fails}/{len(rows)} PASS; relative Frobenius error of the output and "
            "of the worst q/k/v gradient (tolerance x3 for gradients).",
            "",
            markdown_table(
                NUMERICS_COLUMNS,
                rows,
                {"out rel err": ".2e", "grad rel err": ".2e", "tolerance": ".1e"},
            ),
            "",
        ]
    if "throughput" in report:
        a = report["throughput_args"]
        out += [
            "## Throughput",
            "",
            f"batch {a['batch_size']}, {a['warmup']} warm-up + {a['timed_steps']} timed steps, "
            "fastest step; ratios: median over rounds of the paired step-time ratio against "
            "`explicit` (textbook attention) of the same model, mode and dtype; peak MiB: "
            "memory a step allocates on top of what was resident (CUDA only).",
            "",
            markdown_table(
                THROUGHPUT_COLUMNS,
                report["throughput"],
                {"train / explicit": ".3f", "infer / explicit": ".3f"},
            ),
            "",
        ]
    if "study" in report:
        st = report["study"]
        rows = [{"key": k, "value": _cell(st.get(k), ",.2f")} for k in STUDY_KEYS if k in st]
        out += [
            "## Study (studies/seqpool_rfp.yaml, shortened, synthetic CIFAR-shaped data)",
            "",
            markdown_table(("key", "value"), rows, {}),
            "",
            f"`{st.get('command', '')}`",
            "",
        ]
    return "\n".join(out)


# ------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, help="default: %(default)s")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes everywhere (a smoke test of the report)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results",
        help="directory for the JSON and Markdown results (default: benchmarks/results/)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", default=",".join(STEPS), help="comma-separated subset of: " + ", ".join(STEPS)
    )
    parser.add_argument("--models", default=",".join(MODELS), help="default: %(default)s")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="default: %(default)s")
    parser.add_argument("--modes", default=",".join(MODES), help="default: %(default)s")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 (quick: 2)")
    parser.add_argument("--timed-steps", type=int, default=None, help="default: 10 (quick: 1)")
    parser.add_argument("--warmup", type=int, default=None, help="default: 3 (quick: 1)")
    parser.add_argument(
        "--study-file", default=str(ROOT / "studies" / "seqpool_rfp.yaml"),
        help="study to shorten (default: studies/seqpool_rfp.yaml)",
    )  # fmt: skip
    parser.add_argument("--study-epochs", type=int, default=None, help="default: 3 (quick: 1)")
    parser.add_argument("--study-trials", type=int, default=None, help="default: all (quick: 2)")
    parser.add_argument(
        "--study-workers", type=int, default=None,
        help="worker processes (default: ablate study's own default, one per GPU)",
    )  # fmt: skip
    parser.add_argument(
        "--study-train-size", type=int, default=None,
        help=f"synthetic training images (default: {CIFAR_TRAIN_IMAGES}; quick: 64)",
    )  # fmt: skip
    parser.add_argument(
        "--study-test-size", type=int, default=None, help="default: 10000 (quick: 32)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    for key in ("steps", "models", "variants", "modes", "dtypes"):
        setattr(args, key, [v.strip() for v in getattr(args, key).split(",") if v.strip()])
    choices = {"steps": STEPS, "modes": MODES, "dtypes": DTYPES}
    for key, valid in choices.items():
        bad = sorted(set(getattr(args, key)) - set(valid))
        if bad:
            parser.error(f"--{key}: {', '.join(bad)} not valid; choose from {', '.join(valid)}")
    quick = {
        "batch_size": (128, 2), "timed_steps": (10, 1), "warmup": (3, 1), "study_epochs": (3, 1),
        "study_trials": (None, 2), "study_train_size": (CIFAR_TRAIN_IMAGES, 64),
        "study_test_size": (10_000, 32),
    }  # fmt: skip
    for key, (full, small) in quick.items():
        if getattr(args, key) is None:
            setattr(args, key, small if args.quick else full)
    try:
        torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device: {err}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    report: dict[str, Any] = {"header": header(device), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
    }}  # fmt: skip
    failed = []

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"[gpu_check {time.perf_counter() - t0:5.1f}s] {text}", file=sys.stderr)

    if "tests" in args.steps:
        progress("pytest -m gpu")
        report["tests"] = run_tests(device)
        if report["tests"]["status"] == "failed":
            failed.append("tests")
    if "numerics" in args.steps:
        progress("numerics against the float64 oracle")
        report["numerics"] = check_numerics(device, args.quick)
        if any(r["status"] == "FAIL" for r in report["numerics"]):
            failed.append("numerics")
    if "throughput" in args.steps:
        progress("throughput")
        report["throughput_args"] = {
            k: getattr(args, k) for k in ("batch_size", "warmup", "timed_steps")
        }
        report["throughput"] = measure_throughput(args, device)
    if "study" in args.steps:
        progress("study")
        work = Path(tempfile.mkdtemp(prefix="ablate-gpu-check-"))
        try:
            report["study"] = run_study(args, device, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if report["study"]["status"] != "passed":
            failed.append("study")
    report["status"] = "fail: " + ", ".join(failed) if failed else "pass"
    report["seconds"] = time.perf_counter() - t0
    text = render_markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = args.out / f"gpu_check-{device.type}-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    stem.with_suffix(".md").write_text(text + "\n")
    print(f"\nwrote {stem}.json and {stem}.md")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
