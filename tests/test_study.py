"""`ablate study` against real Optuna storages (SQLite files) and a real MLflow SQLite store.

Training trials are tiny (digits, 1-3 epochs). The multi-process tests start the real
command as subprocesses: two worker processes sharing one SQLite storage, and a worker
killed with SIGKILL in the middle of a trial, then the same command run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
mlflow = pytest.importorskip("mlflow")
from cli_process import study_cli  # noqa: E402  (tests/ helper, not collected)
from mlflow import MlflowClient  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from ablate.cli import main  # noqa: E402
from ablate.study import load_study, run_study  # noqa: E402
from ablate.study.common import RunSettings  # noqa: E402
from ablate.study.parent import prepare_study  # noqa: E402
from ablate.study.report import format_plan  # noqa: E402
from ablate.study.storage import open_storage  # noqa: E402
from ablate.study.worker import run_worker  # noqa: E402
from ablate.tracking.conventions import LR, TRAIN_LOSS, VAL_ACC, VAL_LOSS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STORAGE = "sqlite:///ablate-optuna.db"

TINY = """\
name: {name}
base:
  dataset: digits
  img_size: {img_size}
  epochs: {epochs}
  batch_size: 128
  checkpoint_dir: checkpoints
grid:
{grid}
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _study_file(
    workdir: Path, name: str, grid: str, epochs: int = 1, extra: str = "", img_size: int = 8
) -> Path:
    """A study of CCT-2 on digits; at 8 px (4 tokens) an epoch takes 0.3 s on one core."""
    text = TINY.format(name=name, epochs=epochs, grid=grid, img_size=img_size)
    return _write(workdir / f"{name}.yaml", text + extra)


def _trials(workdir: Path, name: str) -> list:
    storage = open_storage(f"sqlite:///{workdir}/ablate-optuna.db")
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=True)
    finally:
        storage.engine.dispose()


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


def _parent_id(workdir: Path, name: str) -> str:
    storage = open_storage(f"sqlite:///{workdir}/ablate-optuna.db")
    try:
        return optuna.load_study(study_name=name, storage=storage).user_attrs[
            "mlflow_parent_run_id"
        ]
    finally:
        storage.engine.dispose()


def _complete_per_cell(trials: list) -> Counter:
    return Counter(t.user_attrs["cell"] for t in trials if t.state == TrialState.COMPLETE)


def _check_trial_run(client: MlflowClient, trial, parent: str, study: str) -> None:
    run = client.get_run(trial.user_attrs["mlflow_run_id"])
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert tags["study"] == study and tags["role"] == "trial"
    assert tags["optuna.trial_number"] == str(trial.number)
    for key, value in trial.params.items():  # the trial's parameters are the run's params
        if key != "variant":
            assert run.data.params[key] == str(value), key
    if "variant" in trial.params:  # what ran is the trial's parameter
        assert run.data.params["variant"] == trial.params["variant"].partition(":")[0]
    assert not [k for k in tags if k.startswith("optuna.param.") or k == "optuna.study_name"]


# -- validation, before any trial ---------------------------------------------------------------
BAD_FILES = {
    "unknown top-level key": ("name: s\ngrid: {seed: [0]}\nsamplr: tpe\n", "samplr"),
    "unknown base key": (
        "name: s\nbase: {epochz: 3}\ngrid: {seed: [0]}\n",
        "base: unknown run-config key 'epochz'; did you mean epochs",
    ),
    "wrong type in base": (
        "name: s\nbase: {epochs: many}\ngrid: {seed: [0]}\n",
        "base: epochs must be an integer",
    ),
    "wrong type of key": (
        "name: s\ngrid: {seed: [0]}\nmax_retries: lots\n",
        "max_retries: expected a valid integer",
    ),
    "wrong choice": (
        "name: s\ngrid: {seed: [0]}\nsampler: bayes\n",
        "sampler: expected 'grid', 'tpe' or 'random'",
    ),
    "unknown variant": (
        "name: s\ngrid: {variant: [softmax, sofmax]}\n",
        "grid.variant[1]: unknown attention variant 'sofmax'",
    ),
    "bad variant parameter": (
        "name: s\ngrid: {variant: ['softmax_v:gamma=2']}\n",
        "grid.variant[0]: variant 'softmax_v' has no parameter 'gamma'",
    ),
    "empty grid": ("name: s\ngrid: {}\n", "grid: is empty"),
    "empty grid list": ("name: s\ngrid: {seed: []}\n", "grid.seed: expected a non-empty list"),
    "unknown grid key": (
        "name: s\ngrid: {sede: [0, 1]}\n",
        "grid: unknown run-config key 'sede'; did you mean seed",
    ),
    "bad grid value": (
        "name: s\ngrid: {apply_to: [attention, everywhere]}\n",
        "grid.apply_to[1]: apply_to: 'everywhere' is not valid",
    ),
    "duplicate cell": ("name: s\ngrid: {seed: [0, 0]}\n", "grid.seed[1]: 0 is listed twice"),
    "unknown model": (
        "name: s\nbase: {model: cct_9}\ngrid: {seed: [0]}\n",
        "base: unknown model 'cct_9'",
    ),
    "missing name": ("grid: {seed: [0]}\n", "name: missing (required)"),
    "search param type": (
        "name: s\nsearch_space: {lr: {type: log_float, low: 0, high: 1}}\nn_trials: 2\n",
        "search_space.lr: a log_float parameter needs low > 0",
    ),
    "search key not numeric": (
        "name: s\nsearch_space: {variant: {type: float, low: 0, high: 1}}\nn_trials: 2\n",
        "search_space.variant: variant is not a numeric setting",
    ),
    "grid with n_trials": (
        "name: s\ngrid: {seed: [0, 1]}\nn_trials: 5\n",
        "n_trials: a grid study runs each of its 2 cells once",
    ),
    "exclude matches nothing": (
        "name: s\ngrid: {variant: [softmax], seed: [0]}\nexclude: [{variant: softmax_v}]\n",
        "exclude[0].variant: 'softmax_v' is not one of the grid values",
    ),
    "pruner option of another pruner": (
        "name: s\ngrid: {seed: [0]}\npruner: {type: median, reduction_factor: 3}\n",
        "pruner: the median pruner does not take reduction_factor",
    ),
    "not a mapping": ("- name\n- s\n", "expected a mapping of study keys"),
    "not yaml": ("name: [s\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_study_file_is_refused_before_any_trial(case, workdir, capsys):
    text, expected = BAD_FILES[case]
    path = _write(workdir / "bad.yaml", text)
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ablate study: error: {path}:"), err
    assert expected in err, err
    # Refused before anything was created: no study storage, no MLflow store.
    assert not (workdir / "ablate-optuna.db").exists()
    assert not (workdir / "mlflow.db").exists()


def test_unknown_top_level_key_lists_valid_keys(workdir, capsys):
    path = _write(workdir / "bad.yaml", "name: s\ngrid: {seed: [0]}\nsamplr: tpe\n")
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: samplr: unknown key; valid keys: name," in err and "sampler" in err


def test_missing_study_file(workdir, capsys):
    assert main(["study", "studies/nope.yaml"]) == 2
    assert "studies/nope.yaml: no such study file" in capsys.readouterr().err


def test_dry_run_prints_every_cell_and_runs_nothing(workdir, capsys):
    path = _study_file(
        workdir,
        "dry",
        "  variant: [softmax, softmax_v, 'alpha_remix:alpha=1,beta=1']\n  seed: [0, 1]\n"
        "  apply_to: [attention, seqpool]\n",
        extra="exclude:\n  - {variant: softmax, apply_to: seqpool}\n",
    )
    assert main(["study", str(path), "--dry-run", "--trials", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    cells = [line for line in out if line.startswith("trial ")]
    assert len(cells) == 3 * 2 * 2 - 2  # the softmax/seqpool cells are excluded
    assert cells[0] == "trial  1/10: variant=softmax seed=0 apply_to=attention"
    assert "trial 10/10: variant=alpha_remix:alpha=1,beta=1 seed=1 apply_to=seqpool" in cells
    # seeds vary slowest: every configuration at seed 0 comes before any seed 1
    seeds = [line.split("seed=")[1].split()[0] for line in cells]
    assert seeds == sorted(seeds)
    assert not any("variant=softmax seed=0 apply_to=seqpool" in line for line in cells)
    assert out[0].startswith("study 'dry'") and "10 trials" in out[0]
    assert any(line == "this command: at most 3 trials" for line in out)
    assert not (workdir / "ablate-optuna.db").exists() and not (workdir / "mlflow.db").exists()


def test_search_space_dry_run(workdir, capsys):
    path = _write(
        workdir / "tune.yaml",
        "name: tune\nbase: {dataset: digits}\nsearch_space:\n"
        "  lr: {type: log_float, low: 1e-4, high: 1e-2}\n"
        "  warmup_epochs: {type: float, low: 0, high: 3, step: 0.5}\n"
        "  variant: {type: categorical, choices: [softmax, softmax_v]}\n"
        "n_trials: 12\npruner: hyperband\n",
    )
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 trials, sampled by tpe" in out
    assert "sampled: lr ~ log_float[0.0001, 0.01]" in out
    assert "sampled: variant ~ categorical[softmax, softmax_v]" in out
    assert "pruner hyperband" in out


SHIPPED = sorted((ROOT / "studies").glob("*.yaml"))


def test_every_shipped_study_is_there():
    names = {p.stem for p in SHIPPED}
    assert {"quick", "seqpool_rfp", "cct7_cifar10", "finetune_anneal", "text_agnews"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_study_validates_and_dry_runs(path, workdir, capsys):
    text = path.read_text()
    assert text.startswith("# "), "every study file starts with a comment: question and cost"
    assert "Cost:" in text
    assert main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = load_study(path)
    assert plan.is_grid and plan.spec.pruner.type == "none"  # ablations: complete curves
    assert sum(line.startswith("trial ") for line in out.splitlines()) == len(plan.cells)
    assert not (workdir / "ablate-optuna.db").exists()


def test_shipped_study_contents():
    quick = load_study(ROOT / "studies/quick.yaml")
    assert quick.base["dataset"] == "digits" and len(quick.cells) == 15
    assert quick.grid == {
        "variant": ["softmax", "softmax_v", "alpha_remix"],
        "seed": [0, 1, 2, 3, 4],
    }
    rfp = load_study(ROOT / "studies/seqpool_rfp.yaml")
    assert rfp.base["model"] == "cct_2_3x2_32" and rfp.base["apply_to"] == "seqpool"
    assert rfp.base["dataset"] == "cifar10" and rfp.base["epochs"] == 200
    assert rfp.grid["variant"] == [
        "softmax",
        "softmax_v",
        "alpha_remix:alpha=10,beta=0",
        "alpha_remix:alpha=1,beta=1",
        "alpha_remix:alpha=-1,beta=1",
    ]
    assert len(rfp.grid["seed"]) == 5 and len(rfp.cells) == 25
    cct7 = load_study(ROOT / "studies/cct7_cifar10.yaml")
    assert cct7.base["model"] == "cct_7_3x1_32" and cct7.base["epochs"] == 300
    assert {c.params["apply_to"] for c in cct7.cells} == {"attention", "seqpool", "both"}
    ft = load_study(ROOT / "studies/finetune_anneal.yaml")
    assert ft.base["val_split"] == "test_half"  # the source saw all of CIFAR-10's train split
    assert (
        ft.base["init_from"]
        and ft.base["variant"] == "softmax_v"
        and ft.base["alpha_schedule"] == "linear"
    )
    assert "alpha_epochs" in ft.grid
    text = load_study(ROOT / "studies/text_agnews.yaml")
    assert text.base["model"] == "text_cct_2" and text.base["dataset"] == "ag_news"


def test_format_plan_names_storage_without_password():
    plan = load_study(ROOT / "studies/quick.yaml")
    out = format_plan(
        plan, storage="postgresql://me:secret@db.example/ablate", tracking_uri="sqlite:///m.db"
    )
    assert "secret" not in out and "postgresql://me:***@db.example/ablate" in out


# -- running -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")  # made by MLflow once per session
def test_grid_with_two_worker_processes_runs_every_cell_once(workdir):
    path = _study_file(
        workdir, "quick_test", "  variant: [softmax, softmax_v]\n  seed: [0, 1]\n"
    )
    proc = study_cli(workdir, str(path), "--workers", "2")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "database is locked" not in out
    trials = _trials(workdir, "quick_test")
    plan = load_study(path)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), out
    assert _complete_per_cell(trials) == Counter({c.key: 1 for c in plan.cells})
    # two processes really shared the work
    assert len({t.system_attrs["ablate.worker"]["pid"] for t in trials}) == 2
    parent = _parent_id(workdir, "quick_test")
    client = _client(workdir)
    parent_run = client.get_run(parent)
    assert (
        parent_run.data.tags["role"] == "study" and parent_run.data.tags["study"] == "quick_test"
    )
    assert parent_run.info.status == "FINISHED"
    for trial in trials:
        _check_trial_run(client, trial, parent, "quick_test")
        run_id = trial.user_attrs["mlflow_run_id"]
        assert client.get_run(run_id).info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run_id, VAL_ACC)] == [0, 1]
        assert trial.intermediate_values.keys() == {0, 1}
    children = client.search_runs(
        [parent_run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(children) == 4
    assert "softmax_v" in out and f"best {VAL_ACC}" in out  # the summary table


def _val_curve(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, VAL_ACC))


@pytest.mark.slow
@pytest.mark.usefixtures("existing_store")  # made by MLflow once per session
def test_sigkilled_worker_trial_resumes_from_its_checkpoint_in_the_same_run(
    workdir, uninterrupted
):
    """Issue 11 acceptance: SIGKILL a study worker mid-trial after a few epochs, rerun the
    command: the retried trial resumes in the same MLflow run from its last checkpoint,
    every epoch is logged once, and the curve equals an uninterrupted same-seed run."""
    epochs = 10  # of 0.3 s each at 8 px (the uninterrupted reference's): time to kill the
    # worker between epoch 2 and the end
    path = _study_file(workdir, "kill_test", "  variant: [softmax]\n  seed: [0]\n", epochs=epochs)
    proc = study_cli(workdir, str(path), threads=1)  # as the reference ran
    db = workdir / "ablate-optuna.db"
    victim, run_id = None, None
    deadline = time.time() + 240
    while run_id is None and time.time() < deadline:
        time.sleep(0.1)
        if proc.poll() is not None:
            pytest.fail("the study finished before it could be killed:\n" + proc.stdout.read())
        # touch the storage only once a trial trains (opening it while the command creates
        # its tables would race with it)
        checkpoints = workdir / "checkpoints"
        if not db.exists() or not checkpoints.exists() or not any(checkpoints.iterdir()):
            continue
        try:
            running = [t for t in _trials(workdir, "kill_test") if t.state == TrialState.RUNNING]
        except Exception:  # the study or its tables are still being created
            continue
        victim = next((t for t in running if "mlflow_run_id" in t.user_attrs), None)
        if victim is None:
            continue
        # kill once at least two epochs are checkpointed (and before the run ends)
        ckpt = workdir / "checkpoints" / victim.user_attrs["mlflow_run_id"] / "last.pt"
        logged = _val_curve(_client(workdir), victim.user_attrs["mlflow_run_id"])
        if ckpt.exists() and len(logged) >= 3:
            run_id = victim.user_attrs["mlflow_run_id"]
    assert run_id is not None, "no trial reached its third epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    client = _client(workdir)
    epochs_before = max(step for step, _ in _val_curve(client, run_id))
    assert epochs_before < epochs

    rerun = study_cli(workdir, str(path), threads=1)
    out, _ = rerun.communicate(timeout=400)
    assert rerun.returncode == 0, out
    trials = _trials(workdir, "kill_test")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    retry = trials[1]
    assert retry.user_attrs["mlflow_run_id"] == run_id  # the same MLflow run continued
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["trial_state"] == "COMPLETE"
    assert "failure_reason" not in run.data.tags
    assert run.data.tags["optuna.trial_number"] == "1" and run.data.tags["optuna.attempt"] == "2"
    resumed_from = int(run.data.tags["resumed_from_epoch"])
    assert 2 <= resumed_from <= epochs_before  # epochs before the kill were not retrained
    for key in (VAL_ACC, VAL_LOSS, TRAIN_LOSS, LR):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == sorted(set(steps)), f"{key} logged twice for an epoch"
    curve = _val_curve(client, run_id)
    assert [step for step, _ in curve] == list(range(epochs + 1))

    # the same configuration and seed, never interrupted (softmax, seed 0, 8 px, batch 128)
    for key in (VAL_ACC, VAL_LOSS, TRAIN_LOSS):
        ours = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert ours == [tuple(point) for point in uninterrupted[key]], key


def _fake_trial_of_another_machine(workdir: Path, plan, settings: RunSettings, parent: str) -> int:
    """A RUNNING trial of the study's only cell, claimed by a worker on another host."""
    from ablate.tracking import Tracker

    storage = open_storage(settings.storage_url)
    try:
        study_id = storage.get_study_id_from_name(plan.name)
        cell = plan.cells[0]
        trial_id = storage.create_new_trial(
            study_id,
            template_trial=create_trial(
                state=TrialState.WAITING,
                system_attrs={"fixed_params": dict(cell.params)},
                user_attrs={"cell": cell.key},
            ),
        )
        storage.set_trial_system_attr(
            trial_id, "ablate.worker", {"host": "another-machine", "pid": 4242, "pid_start": None}
        )
        storage.record_heartbeat(trial_id)
        assert storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        run = Tracker.start(
            settings.tracking_uri,
            plan.experiment,
            tags={"study": plan.name, "role": "trial"},
            parent_run_id=parent,
        )
        storage.set_trial_user_attr(trial_id, "mlflow_run_id", run.run_id)
        return storage.get_trial(trial_id).number
    finally:
        storage.engine.dispose()


def test_trial_of_a_silent_machine_is_waited_for_then_failed_and_rerun(workdir):
    path = _study_file(workdir, "stale_test", "  seed: [3]\n")
    plan = load_study(path)
    settings = RunSettings(
        storage_url=f"sqlite:///{workdir}/ablate-optuna.db",
        tracking_uri=f"sqlite:///{workdir}/mlflow.db",
    )
    parent = prepare_study(plan, settings)
    number = _fake_trial_of_another_machine(workdir, plan, settings, parent)

    # Its heartbeat is fresh: the cell is RUNNING elsewhere, so this worker waits, not runs it.
    out = run_study(
        plan, storage=STORAGE, quiet=True, timeout=1.5, poll_interval=0.2, grace_period=60
    )
    assert out.trials_run == 0 and not out.complete
    assert _trials(workdir, "stale_test")[number].state == TrialState.RUNNING
    # a requeued array task with nothing to claim leaves at once, not holding its allocation
    assert run_worker(plan, dataclasses.replace(settings, wait_for_others=False)) == 0

    time.sleep(2.5)  # now the heartbeat is older than a 1 s grace period
    out = run_study(
        plan, storage=STORAGE, quiet=True, grace_period=1, heartbeat_interval=1, poll_interval=0.2
    )
    assert out.complete and out.trials_run == 1
    trials = _trials(workdir, "stale_test")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == number  # Optuna's retry callback re-queued it
    client = _client(workdir)
    # the retry continued the silent trial's run (it had no checkpoint: from epoch 0), which
    # was failed meanwhile: one run for the cell, and its stops say what happened
    run_id = trials[0].user_attrs["mlflow_run_id"]
    assert trials[1].user_attrs["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    assert json.loads(run.data.tags["stops"]) == [{"reason": "worker lost", "epoch": None,
                                                   "resumed": 0}]
    _check_trial_run(client, trials[1], parent, "stale_test")
    assert run.data.tags["optuna.retry_of"] == str(number)


def test_median_pruner_prunes_a_trial_that_does_not_learn(workdir):
    # Same seed and data, no warm-up: lr 5e-3 learns within an epoch, lr 1e-9 cannot move
    # from the initial accuracy, so at epoch 1 the second trial is below the first (the
    # median of one completed trial) and is pruned.
    path = _write(
        workdir / "prune.yaml",
        "name: prune_test\n"
        "base: {dataset: digits, epochs: 2, warmup_epochs: 0, checkpoint_dir: checkpoints}\n"
        "grid: {lr: [5.0e-3, 1.0e-9]}\n"
        "pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}\n",
    )
    plan = load_study(path)
    out = run_study(plan, quiet=True)
    assert out.complete
    first, second = _trials(workdir, "prune_test")
    assert first.state == TrialState.COMPLETE and first.params["lr"] == 5e-3
    assert second.state == TrialState.PRUNED and second.params["lr"] == 1e-9
    assert max(second.intermediate_values) == 1  # stopped at epoch 1 of 2
    client = _client(workdir)
    run = client.get_run(second.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "PRUNED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, VAL_ACC)] == [0, 1]
    assert client.get_run(first.user_attrs["mlflow_run_id"]).data.tags["trial_state"] == "COMPLETE"
    rows = {row["lr"]: row for row in out.rows}  # lr is a grid key: one summary row each
    assert rows[1e-9]["pruned"] == 1 and rows[5e-3]["complete"] == 1
    assert sum(r["failed"] for r in out.rows) == 0
    assert first.value == max(first.intermediate_values[e] for e in (1, 2))  # best, not final


def test_search_study_samples_n_trials_and_resumes_with_trials_limit(workdir, capsys):
    path = _write(
        workdir / "tune.yaml",
        "name: tune_test\nbase: {dataset: digits, epochs: 1, checkpoint_dir: checkpoints}\n"
        "search_space:\n  lr: {type: log_float, low: 1.0e-4, high: 1.0e-2}\n"
        "  warmup_epochs: {type: float, low: 0, high: 1}\n"
        "sampler: random\nseed: 7\nn_trials: 2\nobjective: final\n",
    )
    assert main(["study", str(path), "--trials", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "incomplete" in out
    assert len(_trials(workdir, "tune_test")) == 1
    parent = _parent_id(workdir, "tune_test")
    assert _client(workdir).get_run(parent).info.status == "KILLED"  # stopped early, resumable

    assert main(["study", str(path), "--quiet"]) == 0
    trials = _trials(workdir, "tune_test")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    client = _client(workdir)
    assert client.get_run(parent).info.status == "FINISHED"
    for t in trials:
        assert 1e-4 <= t.params["lr"] <= 1e-2 and 0 <= t.params["warmup_epochs"] <= 1
        assert t.value == t.intermediate_values[1]  # objective: final
        _check_trial_run(client, t, parent, "tune_test")
        logged = client.get_run(t.user_attrs["mlflow_run_id"]).data.params
        assert float(logged["lr"]) == pytest.approx(t.params["lr"])
    summary = client.download_artifacts(parent, "summary.md", str(workdir))
    assert "| variant |" in Path(summary).read_text()


def test_changed_metric_of_an_existing_study_is_refused(workdir, capsys):
    path = _study_file(workdir, "fixed", "  seed: [0]\n")
    plan = load_study(path)
    prepare_study(
        plan, RunSettings(storage_url=STORAGE, tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    )
    _write(path, path.read_text() + "metric: f1/val\n")
    assert main(["study", str(path)]) == 2
    assert (
        "metric: study 'fixed'" in capsys.readouterr().err and len(_trials(workdir, "fixed")) == 0
    )


def test_setup_error_stops_the_study_with_one_line(workdir, capsys):
    # A data set that does not exist fails in every trial: a setup error stops the worker
    # at once (one clear line) and does not use up the cell's retries.
    path = _study_file(workdir, "broken", "  seed: [0]\n")
    text = path.read_text().replace("dataset: digits", "dataset: folder:missing_dir")
    _write(path, text)
    assert main(["study", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing_dir" in err
    (trial,) = _trials(workdir, "broken")
    assert trial.state == TrialState.FAIL and trial.system_attrs["ablate.fail_kind"] == "setup"
    # bad input fails while the trial is resolved and loaded, before an MLflow run exists:
    # no half-logged run is left behind; the reason is on the trial
    assert "mlflow_run_id" not in trial.user_attrs and "missing_dir" in trial.user_attrs["error"]
    client = _client(workdir)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments, "tags.role = 'trial'") == []
    assert json.loads(trial.user_attrs["cell"]) == {"seed": 0}


def test_changed_base_of_an_existing_study_is_refused(workdir, capsys):
    path = _study_file(workdir, "based", "  seed: [0]\n")
    plan = load_study(path)
    prepare_study(
        plan, RunSettings(storage_url=STORAGE, tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    )
    # run-local keys may differ between commands and machines ...
    _write(
        path, path.read_text().replace("checkpoint_dir: checkpoints", "checkpoint_dir: elsewhere")
    )
    assert main(["study", str(path), "--dry-run"]) == 0
    prepare_study(
        load_study(path),
        RunSettings(storage_url=STORAGE, tracking_uri=f"sqlite:///{workdir}/mlflow.db"),
    )
    # ... what is trained may not
    _write(path, path.read_text().replace("epochs: 1", "epochs: 2"))
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert "base: study 'based'" in err and "epochs 1 -> 2" in err


def test_diverging_cell_is_retried_then_given_up(workdir, capsys):
    path = _write(
        workdir / "diverge.yaml",
        "name: diverge_test\n"
        "base: {dataset: digits, epochs: 1, lr: 1.0e+10, warmup_epochs: 0, checkpoint_dir: c}\n"
        "grid: {seed: [0]}\nmax_retries: 1\n",
    )
    assert main(["study", str(path), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "1 cells failed 2 times and were given up" in out
    trials = _trials(workdir, "diverge_test")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all(t.system_attrs["ablate.fail_kind"] == "error" for t in trials)
    assert "training diverged" in trials[0].user_attrs["error"]
    client = _client(workdir)
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags["trial_state"] == "FAIL"
    parent = client.get_run(_parent_id(workdir, "diverge_test"))
    assert parent.data.tags["study_state"] == "complete_with_failed_cells"
    # a rerun does not try a given-up cell again
    assert main(["study", str(path), "--quiet"]) == 1
    assert len(_trials(workdir, "diverge_test")) == 2


def test_unreachable_storage_is_one_line_without_password(workdir, capsys):
    pytest.importorskip("psycopg2")
    path = _study_file(workdir, "nowhere", "  seed: [0]\n")
    assert main(["study", str(path), "--storage", "postgresql://me:hunter2@127.0.0.1:1/db"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot open study storage" in err
    assert "hunter2" not in err and "me:***@127.0.0.1:1/db" in err
    assert not (workdir / "mlflow.db").exists()
