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
         "--metric", "val_acc", "--tracking-uri", store["uri"], "--out", str(out), "--no-plots",
         "--bootstrap", "500"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("study 'sweep': 6 runs in 2 group(s), grouped by variant")
    assert "end point: val_acc of the final weights" in printed
    assert "difference from softmax (val_acc, final):" in printed
    assert "wrote " in printed and "logged " in printed
    assert not list(out.glob("*.png")) and (out / "summary_val_acc.csv").is_file()


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
    assert (out / "diff_val_acc.png").is_file() and (out / "diff_val_acc.svg").is_file()
    assert not (out / "diff_val_acc.pdf").exists()
    code = main(["compare", "--experiment", "ablate", "--tracking-uri", store["uri"],
                 "--out", str(out), "--format", "png,tiff"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--format: tiff not valid; choose from png, pdf, svg" in err[0]
