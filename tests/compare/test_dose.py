"""`ablate compare --x alpha`: the end point against a numeric variant parameter."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats as sps

from ablate import compare
from ablate.cli import main
from ablate.exceptions import ConfigError

from .conftest import curve, log_run

ALPHAS = (0.0, 0.25, 0.5, 1.0)
SLOPE = -0.02  # true change of test accuracy per unit alpha


@pytest.fixture(scope="module")
def dose_store(tmp_path_factory):
    """4 alpha levels x 3 seeds of alpha_remix:alpha=A; accuracy falls linearly in alpha."""
    root = tmp_path_factory.mktemp("dose")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    eid = client.create_experiment("ablate", artifact_location=(root / "art").as_uri())
    rng = np.random.default_rng(3)
    logged = []
    for alpha in ALPHAS:
        for seed in range(3):
            values = curve("softmax", seed) + SLOPE * alpha + rng.normal(0, 0.002)
            logged.append(log_run(
                client, eid, variant="alpha_remix", seed=seed, val_acc=values, alpha=False,
                params={"variant.alpha": f"{alpha:g}", "data.test_size": "360"},
            ))  # fmt: skip
    return uri, logged


def test_x_alpha_prints_one_row_per_level_and_writes_the_plot(dose_store, tmp_path, capsys):
    uri, logged = dose_store
    out = tmp_path / "out"
    code = main(["compare", "--experiment", "ablate", "--x", "alpha", "--tracking-uri", uri,
                 "--out", str(out), "--format", "png,pdf"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("dose-response:"))
    table = lines[title + 2 : title + 2 + 2 + len(ALPHAS) + 1]  # header, rule, levels, trend
    assert [row.split()[0] for row in table[2:]] == ["0", "0.25", "0.5", "1", "trend"]
    assert all("3 (0/0)" in row for row in table[2:-1])
    assert "baseline" in table[2] and "paired t (3 pairs)" in table[3]
    assert lines[title].endswith("; Δ vs alpha = 0:")
    assert (out / "dose_test_acc_vs_alpha.png").is_file()
    assert (out / "dose_test_acc_vs_alpha.pdf").is_file()
    assert (out / "dose_test_acc_vs_alpha.csv").is_file()


def test_trend_is_the_mean_of_per_seed_slopes(dose_store):
    uri, logged = dose_store
    result = compare.compare_runs(experiment="ablate", x="alpha", tracking_uri=uri, out=None)
    levels = result.dose.levels
    assert list(levels["x"]) == list(ALPHAS) and list(levels["n"]) == [3, 3, 3, 3]
    (fit,) = result.dose.trends
    # reference: a least-squares slope per seed, then a one-sample t-test over the seeds
    slopes = [np.polyfit(ALPHAS, [r["test_final"] for r in logged if r["seed"] == s], 1)[0]
              for s in range(3)]  # fmt: skip
    ref = sps.ttest_1samp(slopes, 0.0)
    assert fit["slope"] == pytest.approx(np.mean(slopes))
    assert fit["p_value"] == pytest.approx(ref.pvalue)
    assert (fit["ci_low"], fit["ci_high"]) == pytest.approx(tuple(ref.confidence_interval()))
    assert fit["test"] == "mean of per-seed slopes (3 seeds)"
    assert fit["ci_low"] < SLOPE < fit["ci_high"]
    # Δ vs a chosen baseline level; a level that does not exist is a one-line error
    other = compare.compare_runs(experiment="ablate", x="alpha", baseline_x="0.5",
                                 tracking_uri=uri, out=None)  # fmt: skip
    assert other.dose.baselines == [0.5]
    assert other.dose.levels.set_index("x").loc[0.5, "test"] == ""
    with pytest.raises(ConfigError, match="not a level of alpha; levels: 0, 0.25, 0.5, 1"):
        compare.compare_runs(experiment="ablate", x="alpha", baseline_x="0.3",
                             tracking_uri=uri, out=None)  # fmt: skip
    with pytest.raises(ConfigError, match="--x beta: no selected run"):
        compare.compare_runs(experiment="ablate", x="beta", tracking_uri=uri, out=None)
