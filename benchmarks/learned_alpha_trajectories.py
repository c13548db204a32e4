"""Plot the learned alphas of a study's runs: every ``alpha/...`` metric against the epoch.

Usage (from the directory whose MLflow store holds the study)::

    python benchmarks/learned_alpha_trajectories.py --study related_variants \
        --out docs/related_variants_learned_alpha.png

One panel per attention site (``alpha/layer0``, ``alpha/seqpool``, ...), one line per head
(or the site's single alpha): the mean over the runs (seeds) with a band from the lowest to
the highest run. Runs are the study's finished trial runs whose variant has ``alpha=learned``
(param ``variant.alpha``).
Prints a table of the final values (mean, min, max over runs).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

__all__ = ["collect", "figure", "main"]


def collect(tracking_uri: str | None, study: str) -> dict[str, dict[int, list[float]]]:
    """metric key -> epoch -> values over the study's finished learned-alpha runs."""
    from mlflow import MlflowClient

    from ablate.tracking.conventions import ALPHA

    client = MlflowClient(tracking_uri)
    runs = []
    for exp in client.search_experiments():
        runs += client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.study = '{study}' and attributes.status = 'FINISHED'",
        )
    runs = [r for r in runs if r.data.params.get("variant.alpha") == "learned"]
    if not runs:
        raise SystemExit(f"no finished run with alpha=learned in study {study!r}")
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        # the learned alphas: alpha/layer{i}[/head{j}] (alpha/value is a scheduled alpha)
        for key in sorted(k for k in run.data.metrics if k.startswith("alpha/") and k != ALPHA):
            for m in client.get_metric_history(run.info.run_id, key):
                series[key][m.step].append(m.value)
    return series


def figure(series: dict[str, dict[int, list[float]]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = sorted({key.split("/")[1] for key in series})
    fig, axes = plt.subplots(
        1, len(sites), figsize=(4.2 * len(sites), 3.4), dpi=110, squeeze=False
    )
    for ax, site in zip(axes[0], sites):
        for key in sorted(k for k in series if k.split("/")[1] == site):
            steps = sorted(series[key])
            mean = [statistics.fmean(series[key][s]) for s in steps]
            low = [min(series[key][s]) for s in steps]
            high = [max(series[key][s]) for s in steps]
            label = key.split("/", 2)[2] if key.count("/") == 2 else "alpha"
            (line,) = ax.plot(steps, mean, marker="o", ms=2, label=label)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_title(site)
        ax.set_xlabel("epoch")
        ax.set_ylabel("alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="Optuna study name (tag study)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    series = collect(args.tracking_uri, args.study)
    n = max(len(v) for s in series.values() for v in s.values())
    fig = figure(series, f"learned alpha, study {args.study}: mean over {n} seeds, min-max band")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print("| alpha | epoch | mean | min | max |\n|---|---:|---:|---:|---:|")
    for key in sorted(series):
        last = max(series[key])
        values = series[key][last]
        print(
            f"| {key} | {last} | {statistics.fmean(values):+.3f} | {min(values):+.3f} | "
            f"{max(values):+.3f} |"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
