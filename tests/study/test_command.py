"""`ablate study FILE [KEY=VALUE ...] [flags]`: Hydra-style overrides validated as the file is
and recorded on the parent run, run flags as base overrides, the guards that answer in well
under a second (a huge grid, YAML alias bombs, renamed metrics), and the final line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from mlflow import MlflowClient  # noqa: E402

from ablate.cli import main  # noqa: E402

STUDY = """\
name: shrink
base: {dataset: digits, epochs: 3, checkpoint_dir: checkpoints}
grid:
  variant: [softmax, softmax_v]
  seed: [0, 1, 2]
"""
LAUGHS = "".join(
    f"{a}: &{a} [{', '.join([f'*{b}'] * 9)}]\n" for b, a in zip("abcdefgh", "bcdefghi")
)  # 9^8 values once expanded, from nine lines


@pytest.fixture
def study(workdir: Path) -> Path:
    path = workdir / "shrink.yaml"
    path.write_text(STUDY)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_overrides_shrink_the_study_and_are_recorded_on_its_parent_run(study, workdir, capsys):
    args = ["study", str(study), "base.epochs=1", "grid.seed=[0]", "~grid.variant",
            "--no-system-metrics", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "study 'shrink': complete; 1 trials run now" in out
    stored = optuna.load_study(study_name="shrink", storage="sqlite:///ablate-optuna.db")
    trials = stored.trials
    assert [(t.state.name, t.params) for t in trials] == [("COMPLETE", {"seed": 0})]
    client = MlflowClient()
    run = client.get_run(trials[0].user_attrs["mlflow_run_id"])
    assert run.data.params["epochs"] == "1" and run.data.params["variant"] == "softmax"
    assert not any(k.startswith("system/") for k in run.data.metrics)  # --no-system-metrics
    parent = client.get_run(stored.user_attrs["mlflow_parent_run_id"])
    assert parent.data.params["override.base.epochs"] == "1"
    assert parent.data.params["override.grid.seed"] == "[0]"
    assert parent.data.params["override.grid.variant"] == "(removed)"
    assert parent.data.params["override.base.system_metrics"] == "false"
    effective = Path(client.download_artifacts(parent.info.run_id, "study.yaml", str(workdir)))
    text = effective.read_text()
    assert text.startswith(f"# {study} with base.epochs=1 grid.seed=[0] ~grid.variant")
    assert "epochs: 1" in text and "variant" not in text.split("grid:")[1]
    capsys.readouterr()

    # a resumed study keeps what it trains: a changed base is refused, run settings are not
    assert main(["study", str(study), "base.epochs=2", "grid.seed=[0]", "~grid.variant"]) == 2
    assert "(epochs 1 -> 2); finished cells would not be rerun" in _one_error_line(capsys)
    assert main([*args[:5], "--device", "cpu", "--quiet"]) == 0


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["base.epoch=1"], "(with base.epoch=1): base: unknown run-config key 'epoch'; did you "
                           "mean epochs?"),
        (["bse.epochs=1"], "override 'bse.epochs=1': unknown key 'bse'; valid keys: name, "),
        (["grid.seed"], "override 'grid.seed': expected KEY=VALUE"),
        (["grid.seed=[0,"], "override 'grid.seed=[0,': not a YAML value"),
        (["grid.seed=[]"], "grid.seed: expected a non-empty list, got []"),
        (["metric=val_acc"], "metric: 'val_acc' is now called 'acc/val'"),
        (["name.x=1"], "override 'name.x=1': name is not a mapping"),
    ],
)
def test_a_bad_override_is_one_line_before_anything_is_created(
    study, workdir, capsys, overrides, expected
):
    assert main(["study", str(study), *overrides, "--dry-run"]) == 2
    err = _one_error_line(capsys)
    assert err.startswith("ablate study: error: ") and expected in err, err
    assert not (workdir / "ablate-optuna.db").exists() and not (workdir / "mlflow.db").exists()


def test_overrides_and_run_flags_reach_the_dry_run(study, capsys):
    assert main(["study", str(study), "--dry-run", "grid.seed=[4]", "--device", "cpu",
                 "search_space.lr={type: log_float, low: 1.0e-4, high: 1.0e-2}",
                 "sampler=random"]) == 0
    out = capsys.readouterr().out
    assert "grid 2 variant x 1 seed, lr sampled by random" in out
    assert "base: dataset=digits epochs=3 checkpoint_dir=checkpoints device=cpu" in out
    assert "trial 2/2: variant=softmax_v seed=4 + sampled lr" in out


def test_a_huge_grid_is_refused_at_once_unless_confirmed(study, capsys):
    values = ",".join(map(str, range(1000)))
    started = time.monotonic()
    assert main(["study", str(study), f"grid.seed=[{values}]", f"grid.lr=[{values}]"]) == 2
    assert time.monotonic() - started < 1.0  # sized, never expanded (10^6 cells: 65 s before)
    err = _one_error_line(capsys)
    assert "grid: 2 x 1000 x 1000 = 2,000,000 cells, more than 10,000" in err
    assert "--yes" in err
    assert main(["study", str(study), "grid.seed=[0,1]", "--yes", "--dry-run"]) == 0


@pytest.mark.parametrize("where", ["description", "grid"])
def test_a_yaml_alias_bomb_is_refused_at_once(workdir, capsys, where):
    path = workdir / "laughs.yaml"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS
    if where == "grid":  # the expansion reaches a grid value
        path.write_text(f"name: s\nnested:\n{_indent(bomb)}grid: {{lr: *i}}\n")
    else:
        path.write_text(f"name: s\n{bomb}description: *i\n")
    started = time.monotonic()
    assert main(["study", str(path), "--dry-run"]) == 2
    assert time.monotonic() - started < 1.0  # was 110 s and 3.4 GB
    err = _one_error_line(capsys)
    assert f"{path}: not valid YAML: its aliases expand to more than 100,000 values" in err


def test_a_yaml_alias_bomb_in_a_run_config_is_refused_at_once(workdir, capsys):
    path = workdir / "laughs.yaml"
    path.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + LAUGHS + "variant: *i\n")
    started = time.monotonic()
    assert main(["run", "--config", str(path)]) == 2
    assert time.monotonic() - started < 1.0
    assert "its aliases expand to more than 100,000 values" in _one_error_line(capsys)


def test_a_few_aliases_still_work(workdir, capsys):
    path = workdir / "anchors.yaml"
    path.write_text("name: anchors\nbase: &b {dataset: digits, epochs: 1}\n"
                    "grid: {seed: &seeds [0, 1]}\nexclude: [{seed: 1}]\n")
    assert main(["study", str(path), "--dry-run"]) == 0
    assert "trial 1/1: seed=0" in capsys.readouterr().out


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())
