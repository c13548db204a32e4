"""`ablate compare` against a real MLflow SQLite store with known metric histories.

Expected numbers are recomputed here from the arrays the fixture logged, with numpy and
scipy, independently of ablate.compare's code paths.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pytest
from scipy import stats

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

from ablate import compare  # noqa: E402
from ablate.exceptions import AblateError, ConfigError, DataError  # noqa: E402

EPOCHS = {"softmax": 6, "cosine": 6, "linear": 8}
PLATEAU = {"softmax": 0.85, "cosine": 0.90, "linear": 0.80}
NOISE = 0.01


def _val_acc(variant: str, seed: int, epochs: int) -> np.ndarray:
    """val_acc at steps 0..epochs: a saturating curve plus per-seed noise."""
    rng = np.random.default_rng(1000 * seed + len(variant))
    e = np.arange(epochs + 1)
    curve = PLATEAU[variant] - (PLATEAU[variant] - 0.1) * np.exp(-e / 1.5)
    return curve + rng.normal(0.0, NOISE, size=e.size)


def _log_trial(client, experiment_id, *, variant, seed, val_acc, status, tags=None, alpha=False):
    run = client.create_run(
        experiment_id,
        run_name=f"{variant}-s{seed}",
        tags={
            "variant": variant,
            "apply_to": "attention",
            "model": "cct_2_3x2_32",
            "dataset": "digits",
            "task": "image",
            "alpha_schedule": "linear" if alpha else "none",
            "seed": str(seed),
            **(tags or {}),
        },
    )
    run_id = run.info.run_id
    ts = int(time.time() * 1000)
    epochs = len(val_acc) - 1
    metrics = []
    for step, acc in enumerate(val_acc):
        metrics += [
            Metric("val_acc", float(acc), ts + step, step),
            Metric("val_loss", float(2.5 * (1 - acc)), ts + step, step),
        ]
        if alpha:
            metrics.append(Metric("alpha", step / max(epochs, 1), ts + step, step))
        if step >= 1:
            metrics += [
                Metric("train_loss", float(2.6 * (1 - acc) + 0.05), ts + step, step),
                Metric("lr", 5e-4, ts + step, step),
            ]
    if status == "FINISHED":
        metrics.append(Metric("test_acc", float(val_acc[-1] - 0.01), ts + epochs, epochs))
    params = [Param("variant", variant), Param("seed", str(seed)), Param("lr", "0.0005")]
    client.log_batch(run_id, metrics=metrics, params=params)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment 'ablate' with 3 variants x seeds (different lengths, one RUNNING, one
    FAILED, one pruned, one other data set) and a study spread over two experiments."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    art = (root / "artifacts").as_uri()
    exp = client.create_experiment("ablate", artifact_location=art + "/ablate")
    finals: dict[str, list[float]] = {v: [] for v in EPOCHS}
    bests: dict[str, list[float]] = {v: [] for v in EPOCHS}
    histories: dict[str, list[np.ndarray]] = {v: [] for v in EPOCHS}
    for variant, epochs in EPOCHS.items():
        for seed in range(3):
            status = "FINISHED"
            length = epochs
            if variant == "softmax" and seed == 2:
                status, length = "RUNNING", 4  # still training: contributes epochs 0..4
            acc = _val_acc(variant, seed, length)
            _log_trial(
                client,
                exp,
                variant=variant,
                seed=seed,
                val_acc=acc,
                status=status,
                alpha=variant != "softmax",
            )
            finals[variant].append(float(acc[-1]))
            bests[variant].append(float(acc.max()))
            histories[variant].append(acc)
    # left out by default: a failed run, a pruned trial; left out by --filter: other data set
    _log_trial(
        client, exp, variant="linear", seed=7, val_acc=_val_acc("linear", 7, 3), status="FAILED"
    )
    pruned_acc = _val_acc("linear", 8, 2)
    _log_trial(
        client,
        exp,
        variant="linear",
        seed=8,
        val_acc=pruned_acc,
        status="KILLED",
        tags={"trial_state": "PRUNED"},
    )
    cifar_acc = _val_acc("softmax", 9, 5) - 0.3
    _log_trial(
        client,
        exp,
        variant="softmax",
        seed=9,
        val_acc=cifar_acc,
        status="FINISHED",
        tags={"dataset": "cifar10"},
    )

    # study 'sweep': parent in experiment 'studies', trials there and in 'studies-b'
    exp_a = client.create_experiment("studies", artifact_location=art + "/studies")
    exp_b = client.create_experiment("studies-b", artifact_location=art + "/studies-b")
    parent = client.create_run(exp_a, run_name="sweep", tags={"study": "sweep", "role": "study"})
    parent_id = parent.info.run_id
    study_finals: dict[str, list[float]] = {"softmax": [], "cosine": []}
    for number, (variant, seed, exp_id) in enumerate(
        [
            ("softmax", 0, exp_a),
            ("softmax", 1, exp_a),
            ("cosine", 0, exp_a),
            ("cosine", 1, exp_b),
            ("cosine", 2, exp_b),
        ]
    ):
        acc = _val_acc(variant, seed + 20, 4)
        _log_trial(
            client,
            exp_id,
            variant=variant,
            seed=seed,
            val_acc=acc,
            status="FINISHED",
            tags={
                "study": "sweep",
                "role": "trial",
                "mlflow.parentRunId": parent_id,
                "optuna.trial_number": str(number),
                "trial_state": "COMPLETE",
            },
        )
        study_finals[variant].append(float(acc[-1]))
    _log_trial(
        client,
        exp_b,
        variant="cosine",
        seed=5,
        val_acc=_val_acc("cosine", 5, 1),
        status="KILLED",
        tags={
            "study": "sweep",
            "role": "trial",
            "mlflow.parentRunId": parent_id,
            "trial_state": "PRUNED",
        },
    )
    client.set_terminated(parent_id, "FINISHED")
    return {
        "uri": uri,
        "client": client,
        "finals": finals,
        "bests": bests,
        "histories": histories,
        "pruned_final": float(pruned_acc[-1]),
        "parent_id": parent_id,
        "study_finals": study_finals,
    }


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ablate compare")
    compare.add_arguments(parser)
    return parser.parse_args(list(argv))


def _row(result, group):
    table = result.table
    return table[table["group"] == group].iloc[0]


@pytest.fixture(scope="module")
def digits(store):
    """The main comparison (no files), shared by the statistics tests."""
    return compare.compare_runs(
        experiment="ablate",
        filter_string="tags.dataset = 'digits'",
        baseline="softmax",
        target=0.8,
        tracking_uri=store["uri"],
        out_dir=None,
    )


def test_table_matches_independent_statistics(store, digits):
    result = digits
    assert result.mode == "max"
    assert list(result.table["group"]) == ["softmax", "cosine", "linear"]  # baseline, then ranked
    base = np.array(store["finals"]["softmax"])
    for variant in EPOCHS:
        final = np.array(store["finals"][variant])
        best = np.array(store["bests"][variant])
        row = _row(result, variant)
        assert row["n"] == 3
        assert row["final_mean"] == pytest.approx(final.mean(), abs=1e-12)
        assert row["final_std"] == pytest.approx(final.std(ddof=1), abs=1e-12)
        low, high = stats.t.interval(0.95, 2, loc=final.mean(), scale=stats.sem(final))
        assert (row["final_ci_low"], row["final_ci_high"]) == pytest.approx((low, high), abs=1e-12)
        assert row["best_mean"] == pytest.approx(best.mean(), abs=1e-12)
        assert row["best_std"] == pytest.approx(best.std(ddof=1), abs=1e-12)
        if variant == "softmax":
            assert math.isnan(row["diff"]) and math.isnan(row["p_value"])
            continue
        assert row["diff"] == pytest.approx(final.mean() - base.mean(), abs=1e-12)
        welch = stats.ttest_ind(final, base, equal_var=False)
        assert row["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    # the RUNNING softmax run counts with its last logged epoch (4);
    # the FAILED, pruned and cifar10 runs do not
    assert _row(result, "softmax")["n_running"] == 1
    runs = result.per_run.set_index("run_name")
    assert (
        runs.loc["softmax-s2", "last_epoch"] == 4 and runs.loc["softmax-s2", "status"] == "RUNNING"
    )
    assert "linear-s7" not in runs.index and "linear-s8" not in runs.index
    assert len(result.per_run) == 9
    # cosine is 0.05 better with noise 0.01: clearly significant
    assert _row(result, "cosine")["p_value"] < 0.01
    assert any("1 FAILED" in n and "1 pruned" in n for n in result.notes)


def test_epochs_to_target(store, digits):
    for variant in EPOCHS:
        hits = [np.flatnonzero(h >= 0.8) for h in store["histories"][variant]]
        reached = [float(h[0]) for h in hits if h.size]
        row = _row(digits, variant)
        assert row["n_reached"] == len(reached)
        if reached:
            assert row["epochs_to_target"] == pytest.approx(np.mean(reached))
        else:
            assert math.isnan(row["epochs_to_target"])


def test_bootstrap_ci_deterministic_and_brackets_difference(store, digits):
    base = np.array(store["finals"]["softmax"])
    cosine = np.array(store["finals"]["cosine"])
    row = _row(digits, "cosine")
    low, high = row["diff_ci_low"], row["diff_ci_high"]
    # noiseless curves at each run's last epoch (the RUNNING softmax run stopped at 4)
    lengths = {"softmax": [6, 6, 4], "cosine": [6, 6, 6]}
    expected = {
        v: np.mean([PLATEAU[v] - (PLATEAU[v] - 0.1) * np.exp(-e / 1.5) for e in lengths[v]])
        for v in lengths
    }
    true_diff = expected["cosine"] - expected["softmax"]
    assert low < cosine.mean() - base.mean() < high
    assert low < true_diff < high
    again = compare.bootstrap_diff_ci(cosine, base, n_boot=10_000, seed=0)
    assert again == (low, high)
    # with n=3 per group the resample distribution is discrete; the seed matters on more data
    a, b = np.random.default_rng(3).normal(size=(2, 25))
    assert compare.bootstrap_diff_ci(a, b, seed=1) == compare.bootstrap_diff_ci(a, b, seed=1)
    assert compare.bootstrap_diff_ci(a, b, seed=1) != compare.bootstrap_diff_ci(a, b, seed=2)
    # independent percentile bootstrap with another generator agrees within resampling noise
    rng = np.random.Generator(np.random.PCG64(12345))
    diffs = [rng.choice(cosine, 3).mean() - rng.choice(base, 3).mean() for _ in range(20_000)]
    ref_low, ref_high = np.percentile(diffs, [2.5, 97.5])
    width = ref_high - ref_low
    assert abs(low - ref_low) < 0.1 * width and abs(high - ref_high) < 0.1 * width


def test_curves_aligned_by_epoch(store, digits):
    curves = digits.curves
    assert set(curves["metric"]) == {"val_acc", "val_loss", "train_loss", "alpha"}
    soft = curves[(curves["metric"] == "val_acc") & (curves["group"] == "softmax")].set_index(
        "step"
    )
    histories = store["histories"]["softmax"]
    assert list(soft.index) == list(range(7))
    assert list(soft["n"]) == [3, 3, 3, 3, 3, 2, 2]  # the RUNNING run stopped at epoch 4
    at3 = np.array([h[3] for h in histories])
    assert soft.loc[3, "mean"] == pytest.approx(at3.mean())
    low, high = stats.t.interval(0.95, 2, loc=at3.mean(), scale=stats.sem(at3))
    assert (soft.loc[3, "ci_low"], soft.loc[3, "ci_high"]) == pytest.approx((low, high))
    at5 = np.array([h[5] for h in histories[:2]])
    assert soft.loc[5, "mean"] == pytest.approx(at5.mean())
    # train_loss starts at epoch 1; alpha only exists for the variants that log it
    train = curves[(curves["metric"] == "train_loss") & (curves["group"] == "linear")]
    assert train["step"].min() == 1 and train["step"].max() == 8
    assert "softmax" not in set(curves.loc[curves["metric"] == "alpha", "group"])
    assert any("softmax n=3->2 at epoch 5" in n for n in digits.notes)


def test_command_prints_table_and_writes_files(store, tmp_path, capsys):
    import pandas as pd
    from matplotlib.image import imread

    out = tmp_path / "out"
    rc = compare.command(
        _args(
            "--experiment",
            "ablate",
            "--filter",
            "tags.dataset = 'digits'",
            "--baseline",
            "softmax",
            "--target",
            "0.8",
            "--out",
            str(out),
            "--tracking-uri",
            store["uri"],
        )
    )
    assert rc == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("group"))
    assert "p (Welch)" in lines[header] and "epochs to 0.8" in lines[header]
    table_lines = lines[header : header + 5]
    assert [line.split()[0] for line in table_lines[2:]] == ["softmax", "cosine", "linear"]
    # aligned: the last column is right-justified, so every line ends under the underline's end
    assert {len(line) for line in table_lines} == {len(lines[header + 1])}
    p_end = lines[header].index("p (Welch)") + len("p (Welch)")
    assert table_lines[3][:p_end].endswith(("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"))
    assert "baseline" in printed and "note: " in printed and "wrote " in printed

    for name in [
        "curve_val_acc.png",
        "curve_val_loss.png",
        "curve_train_loss.png",
        "curve_alpha.png",
        "final_best_val_acc.png",
    ]:
        path = out / name
        assert path.stat().st_size > 5_000, name
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 50
    csv = pd.read_csv(out / "summary_val_acc.csv")
    final = np.array(store["finals"]["cosine"])
    assert csv.loc[csv["group"] == "cosine", "final_mean"].item() == pytest.approx(final.mean())
    assert "variant" in csv.columns
    md = (out / "summary_val_acc.md").read_text()
    assert "| softmax |" in md and "---:" in md
    assert len(pd.read_csv(out / "runs_val_acc.csv")) == 9
    assert {"metric", "group", "step", "n", "mean"} <= set(pd.read_csv(out / "curves.csv").columns)


def test_include_pruned_and_min_mode(store):
    result = compare.compare_runs(
        experiment="ablate",
        filter_string="tags.dataset = 'digits'",
        metric="val_loss",
        include_pruned=True,
        tracking_uri=store["uri"],
        out_dir=None,
        n_boot=500,
    )
    assert result.mode == "min"
    linear = _row(result, "linear")
    assert linear["n"] == 4
    losses = [2.5 * (1 - f) for f in store["finals"]["linear"]] + [
        2.5 * (1 - store["pruned_final"])
    ]
    assert linear["final_mean"] == pytest.approx(np.mean(losses))
    best = [2.5 * (1 - h.max()) for h in store["histories"]["linear"]]
    assert result.per_run.query("group == 'linear' and not pruned")["best"].tolist() == (
        pytest.approx(best)
    )
    # lower loss is better: cosine ranks right after the baseline
    assert list(result.table["group"]) == ["softmax", "cosine", "linear"]
    assert any("pruned run(s) included" in n for n in result.notes)


def test_study_selects_trials_and_logs_to_parent(store, tmp_path, capsys):
    out = tmp_path / "study"
    rc = compare.command(
        _args("--study", "sweep", "--out", str(out), "--tracking-uri", store["uri"])
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "study 'sweep'" in printed and "study parent run" in printed
    client = store["client"]
    logged = {f.path for f in client.list_artifacts(store["parent_id"], "compare")}
    assert {
        "compare/summary_val_acc.csv",
        "compare/curve_val_acc.png",
        "compare/final_best_val_acc.png",
    } <= logged

    result = compare.compare_runs(study="sweep", tracking_uri=store["uri"], out_dir=None)
    assert result.parent_run_id == store["parent_id"]
    cosine, soft = store["study_finals"]["cosine"], store["study_finals"]["softmax"]
    assert _row(result, "cosine")["n"] == 3  # across two experiments, pruned one left out
    assert _row(result, "cosine")["final_mean"] == pytest.approx(np.mean(cosine))
    assert _row(result, "softmax")["n"] == 2
    assert _row(result, "cosine")["p_value"] == pytest.approx(
        stats.ttest_ind(cosine, soft, equal_var=False).pvalue
    )
    assert any("fewer than 3" in n or "too few runs" in n for n in result.notes)


def test_too_few_runs_and_missing_baseline(store, capsys):
    result = compare.compare_runs(
        experiment="ablate",
        filter_string="tags.dataset = 'cifar10'",
        tracking_uri=store["uri"],
        out_dir=None,
    )
    row = _row(result, "softmax")
    assert row["n"] == 1 and math.isnan(row["final_std"]) and math.isnan(row["final_ci_low"])
    text = result.format_table()
    assert "n<2" in text
    assert any("too few runs to conclude anything" in n for n in result.notes)

    missing = compare.compare_runs(
        experiment="ablate",
        filter_string="tags.dataset = 'digits'",
        baseline="performer",
        tracking_uri=store["uri"],
        out_dir=None,
    )
    assert missing.baseline is None and "diff" not in missing.table.columns
    note = next(n for n in missing.notes if "performer" in n)
    assert "cosine" in note and "linear" in note and "softmax" in note


def test_group_by_two_keys_and_partial_baseline(store):
    result = compare.compare_runs(
        experiment="ablate",
        filter_string="tags.dataset = 'digits'",
        group_by="variant,apply_to",
        baseline="softmax",
        tracking_uri=store["uri"],
        out_dir=None,
        n_boot=200,
    )
    assert result.baseline == "softmax/attention"
    assert set(result.table["group"]) == {
        "softmax/attention",
        "cosine/attention",
        "linear/attention",
    }
    # params are the fallback for keys that are not tags
    by_lr = compare.compare_runs(
        experiment="ablate", group_by="lr", tracking_uri=store["uri"], out_dir=None, n_boot=200
    )
    assert list(by_lr.table["group"]) == ["0.0005"]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"experiment": "nope"}, ConfigError, ["unknown experiment 'nope'", "ablate", "studies"]),
        ({"study": "nope"}, ConfigError, ["unknown study 'nope'", "sweep"]),
        ({"metric": "val_top5_acc"}, ConfigError, ["'val_top5_acc'", "val_acc", "train_loss"]),
        ({"filter_string": "tags.dataset = 'imagenet'"}, DataError, ["no runs", "imagenet"]),
        ({"filter_string": "tags.dataset == 'digits'"}, ConfigError, ["--filter", "comparator"]),
        ({"metric": "lr"}, ConfigError, ["--mode max or --mode min"]),
        ({"group_by": "varaint"}, ConfigError, ["'varaint'", "variant", "apply_to"]),
    ],
)
def test_errors_are_one_line(store, kwargs, error, words):
    with pytest.raises(error) as info:
        compare.compare_runs(tracking_uri=store["uri"], out_dir=None, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, AblateError) and "\n" not in message
    for word in words:
        assert word in message


def test_missing_store_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(DataError, match="no MLflow store"):
        compare.compare_runs(out_dir=None)
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(DataError, match="cannot open MLflow store foo://bar"):
        compare.compare_runs(tracking_uri="foo://bar", out_dir=None)


def test_cli_options_and_help():
    parser = argparse.ArgumentParser(prog="ablate compare")
    compare.add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
    args = _args()
    assert (args.experiment, args.group_by, args.metric, args.out, args.mode) == (
        None,
        "variant",
        "val_acc",
        "./compare",
        None,
    )
    with pytest.raises(SystemExit):
        _args("--experiment", "a", "--study", "b")
    assert compare.command.__doc__.split("\n\n")[0].strip()
    assert compare.infer_mode("val_f1") == "max" and compare.infer_mode("test_loss") == "min"
