"""Rendering: the printed tables, Markdown, CSVs and figures written by `ablate compare`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ablate import compare
from ablate.compare.render import format_report, format_table, heading


@pytest.fixture(scope="module")
def written(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = compare.compare_runs(
        experiment="ablate", target=0.8, tracking_uri=store["uri"], out=out
    )
    return result, out


def _tables(text: str) -> list[list[str]]:
    """The aligned tables in a report: lines from a header to the blank line after it."""
    lines, tables, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("group") and i + 1 < len(lines) and lines[i + 1].startswith("---"):
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            tables.append(lines[i:j])
            i = j
        i += 1
    return tables


def test_report_has_three_aligned_tables(written):
    result, _ = written
    text = format_report(result)
    assert text.splitlines()[0] == heading(result)
    assert text.splitlines()[1].startswith("measured on: dataset digits")
    assert (
        "grouped by variant (alpha_schedule, alpha_start, alpha_end vary with them), pooled "
        "over seed"
    ) in text
    assert "end point: test_acc of the final weights (higher is better)" in text
    assert "difference from softmax (test_acc, final):" in text
    assert "learning curve: acc/val; AUC = mean acc/val over epochs 1-6:" in text
    tables = _tables(text)
    assert len(tables) == 3
    for table in tables:
        # aligned: every line ends under the end of the dashed underline (the baseline's
        # row has blank comparison cells)
        assert {len(line) for line in table if "baseline" not in line} == {len(table[1])}
        assert [line.split()[0] for line in table[2:]] == ["softmax", "softmax_v", "alpha_remix"]
    end, diff, curve = tables
    assert "best-val checkpoint (mean ± std)" in end[0] and "n (failed/pruned)" in end[0]
    assert "final ep 6 α 1" in end[3] and end[2].rstrip().endswith("± " + end[2].split("± ")[-1])
    assert "4 (0/0)" in end[2]
    assert "p (Holm)" in diff[0] and "MDE (80%)" in diff[0] and "P(better)" in diff[0]
    assert "baseline" in diff[2] and "paired t (4 pairs)" in diff[3] and " *" in diff[3]
    assert "] paired" in diff[3]  # P(better) says it is paired
    assert "epochs to 0.8: median (reached)" in curve[0] and "(4/4)" in curve[3]
    assert "α over these epochs" in curve[0] and "0.167-1" in curve[3]
    assert "note: p (Holm): one family of 4 comparison(s)" in text


def test_markdown_and_files(written):
    result, out = written
    md = (out / "summary_test_acc.md").read_text()
    assert "| softmax |" in md and "---:" in md and "**end point: test_acc" in md
    assert md.count("| :---") == 0 and md.count("|:---|") >= 3
    csv = pd.read_csv(out / "summary_test_acc.csv")
    assert list(csv.columns[:7]) == ["group", "variant", "alpha_schedule", "alpha_start",
                                     "alpha_end", "metric", "checkpoint"]  # fmt: skip
    for column in ("p_value", "p_holm", "mde", "n_pairs", "n_units", "p_improve", "auc_mean"):
        assert column in csv.columns
    row = csv.set_index("group").loc["softmax_v"]
    assert row["final_mean"] == pytest.approx(
        result.table.set_index("group").loc["softmax_v", "final_mean"]
    )
    assert row["alpha_schedule"] == "linear" and row["checkpoint"] == "final"
    assert len(pd.read_csv(out / "runs_test_acc.csv")) == 12
    diffs = pd.read_csv(out / "diff_curves.csv")
    assert set(diffs["group"]) == {"softmax_v", "alpha_remix"}
    from matplotlib.image import imread

    for name in ("curve_acc_val.png", "curve_loss_train.png", "diff_acc_val.png",
                 "final_best_test_acc.png"):  # fmt: skip
        image = imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500, name
        pixels = image[::4, ::4].reshape(-1, image.shape[-1])  # 300 dpi: every 4th is plenty
        assert np.unique(pixels, axis=0).shape[0] > 50, name


def test_single_run_group_and_no_baseline(store):
    result = compare.compare_runs(
        experiment="mixed", filter="params.dataset = 'cifar10'", tracking_uri=store["uri"],
        out=None,
    )  # fmt: skip
    row = result.table.iloc[0]
    assert row["n"] == 1 and math.isnan(row["final_std"])
    text = format_table(result)
    assert "n<2" in text and "difference from" not in text  # one group: nothing to test
    assert any("too few seeds to conclude anything" in n for n in result.notes)
    assert "nothing (one group)" in heading(result)
