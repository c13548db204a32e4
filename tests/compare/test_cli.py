"""`ablate compare` on the command line: options, output, and one-line errors."""

from __future__ import annotations

import argparse

import pytest

from ablate import compare
from ablate.cli import main


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ablate compare")
    compare.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_options_have_help_and_defaults():
    parser = argparse.ArgumentParser(prog="ablate compare")
    compare.add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
    args = _args()
    assert (args.experiment, args.group_by, args.pool_over, args.metric, args.out) == (
        None, None, None, "acc", "./compare",
    )  # fmt: skip
    assert (args.checkpoint, args.pairing, args.target, args.bootstrap) == (
        None, "auto", "auto", 10_000,
    )  # fmt: skip
    assert _args("--out", "x").out == "x"
    with pytest.raises(SystemExit):  # --output means table|json in every command
        _args("--output", "x")
    with pytest.raises(SystemExit):
        _args("--experiment", "a", "--study", "b")
    with pytest.raises(SystemExit):
        _args("--pairing", "sometimes")
    assert compare.command.__doc__.split("\n\n")[0].strip()


def test_readme_command_prints_tables(store, tmp_path, capsys):
    """`ablate compare --study NAME --group-by variant` as in the README."""
    out = tmp_path / "out"
    code = main(
        ["compare", "--study", "sweep", "--group-by", "variant", "--baseline", "softmax",
         "--metric", "acc/val", "--tracking-uri", store["uri"], "--out", str(out), "--no-plots",
         "--bootstrap", "500"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("study 'sweep': 6 runs in 2 group(s), grouped by variant")
    assert "end point: acc/val of the final weights" in printed
    assert "difference from softmax (acc/val, final):" in printed
    assert "wrote " in printed and "attached " in printed
    assert not list(out.glob("*.png")) and (out / "summary_acc_val.csv").is_file()


def test_refused_pooling_is_a_one_line_error(store, capsys):
    code = main(
        ["compare", "--experiment", "lrs", "--group-by", "variant", "--tracking-uri",
         store["uri"], "--out", "unused"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ablate compare: error: runs in one group differ")
    assert "--pool-over epochs,lr" in err[0]


def test_output_json_and_print_formats(store, tmp_path, capsys):
    """--output means table|json as in the other commands; --format writes each figure in
    every format (PNG at 300 dpi)."""
    import json

    out = tmp_path / "out"
    code = main(
        ["compare", "--experiment", "ablate", "--tracking-uri", store["uri"], "--out", str(out),
         "--output", "json", "--format", "png,svg", "--bootstrap", "0"]
    )  # fmt: skip
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["metric"] == "test_acc" and payload["baseline"] == "softmax"
    assert [g["group"] for g in payload["groups"]] == ["softmax", "softmax_v", "alpha_remix"]
    assert payload["measured_on"].startswith("measured on: dataset digits")
    assert payload["tables"][0]["header"][:2] == ["group", "n (failed/pruned)"]
    assert (out / "diff_acc_val.png").is_file() and (out / "diff_acc_val.svg").is_file()
    assert not (out / "diff_acc_val.pdf").exists()
    code = main(["compare", "--experiment", "ablate", "--tracking-uri", store["uri"],
                 "--out", str(out), "--format", "png,tiff"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--format: tiff not valid; choose from png, pdf, svg" in err[0]


def test_figures_for_print_truetype_pdf_text_svg_and_optional_titles(store, tmp_path, capsys):
    """Issue 26 item 5: camera-ready checks reject Type 3 fonts; SVG keeps its text."""
    out, bare = tmp_path / "out", tmp_path / "bare"
    argv = ["compare", "--experiment", "ablate", "--tracking-uri", store["uri"],
            "--format", "pdf,svg", "--bootstrap", "0"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    assert main([*argv, "--out", str(bare), "--no-titles"]) == 0
    pdfs = sorted(out.glob("*.pdf"))
    assert len(pdfs) == 6
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/Type3" not in data and b"/CIDFontType2" in data, pdf.name
    svg = (out / "curve_acc_val.svg").read_text()
    assert "<text" in svg and "mean and pointwise 95% CI across seeds" in svg
    untitled = (bare / "curve_acc_val.svg").read_text()
    assert "epoch" in untitled and "across seeds" not in untitled


def test_unknown_baseline_is_one_line_and_writes_nothing(store, tmp_path, capsys):
    """Issue 26 item 6: before, exit 0 with a buried note, and the parent run's compare/
    files were written over."""
    client, parent = store["client"], store["parent_id"]
    before = {f.path for f in client.list_artifacts(parent, "compare")}
    out = tmp_path / "out"
    code = main(["compare", "--study", "sweep", "--baseline", "nope", "--metric", "test_f1",
                 "--tracking-uri", store["uri"], "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert (
        "--baseline 'nope' is not a group; groups with finished runs: softmax, softmax_v" in err[0]
    )
    assert not out.exists()
    assert {f.path for f in client.list_artifacts(parent, "compare")} == before
    assert "compare/summary_test_f1.csv" not in before


def test_x_on_the_wrong_study_lists_config_keys_only(store, capsys):
    """Issue 26 item 6: before, 35 keys including local.*, optuna.* and mlflow.* tags."""
    code = main(["compare", "--study", "sweep", "--x", "beta", "--tracking-uri", store["uri"],
                 "--out", "unused"])  # fmt: skip
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--x beta: no selected run has a variant parameter or config key" in err
    listed = err.split("numeric config keys: ")[1].split(", ")
    assert listed == ["alpha_end", "alpha_start", "epochs", "lr"]  # optuna.trial_number is a tag


def test_flags_are_the_fields_of_compare_options():
    """The parser is generated from CompareOptions: one flag per field, same defaults."""
    from dataclasses import MISSING, fields

    parser = argparse.ArgumentParser(prog="ablate compare")
    compare.add_arguments(parser)
    dests = {a.dest: a for a in parser._actions}
    for f in fields(compare.CompareOptions):
        assert f.name in dests, f.name
        assert dests[f.name].default == (None if f.default is MISSING else f.default), f.name
    assert _args("--no-titles", "--no-plots").titles is False
