"""`ablate run` end to end on the embedded digits, into a real temporary SQLite MLflow store."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from ablate.cli import main
from ablate.config import RunConfig
from variants import AlphaSchedule

# Small and fast: 8x8 digits (4 tokens after the two conv+pool stages), 2 epochs.
FAST = ["--img-size", "8", "--epochs", "2", "--quiet", "--batch-size", "128"]
STEPS_PER_EPOCH = math.ceil(1293 / 128)  # digits train split: 1797 - 20% test - 10% val
EPOCH_METRICS = ("loss/val", "acc/val", "precision/val", "recall/val", "f1/val")
TIMING = ("speed/samples_per_s", "speed/epoch_seconds")
TRAIN_METRICS = ("loss/train", "acc/train", "optim/lr", *TIMING)



def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _runs(experiment: str = "ablate"):
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in _client().get_metric_history(run_id, key))


def _artifacts(run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in _client().list_artifacts(run_id, path):
        out |= _artifacts(run_id, f.path) if f.is_dir else {f.path}
    return out


def test_run_logs_curves_params_tags_and_artifacts(workdir):
    args = ["run", "--variant", "softmax_v", "--alpha-schedule", "linear", "--keep-checkpoints"]
    assert main([*args, *FAST]) == 0
    (run,) = _runs()
    rid = run.info.run_id
    assert run.info.status == "FINISHED"

    for key in EPOCH_METRICS:
        assert [s for s, _ in _history(rid, key)] == [0, 1, 2], key
    for key in TRAIN_METRICS:
        steps_values = _history(rid, key)
        assert [s for s, _ in steps_values] == [1, 2], key
        assert all(math.isfinite(v) for _, v in steps_values)
    for key in (
        "test_loss",
        "test_acc",
        "test_precision",
        "test_recall",
        "test_f1",
        "best_val_acc",
        "best_epoch",
    ):
        assert [s for s, _ in _history(rid, key)] == [2], key

    # alpha: the schedule value at step 0, then at the last optimizer step of each epoch
    schedule = AlphaSchedule(
        "linear", 0.0, 1.0, steps=2 * STEPS_PER_EPOCH
    )  # default window: the whole run
    expected = [schedule(0), schedule(STEPS_PER_EPOCH - 1), schedule(2 * STEPS_PER_EPOCH - 1)]
    assert [v for _, v in _history(rid, "alpha/value")] == pytest.approx(expected, abs=1e-9)
    assert expected[0] == 0.0 and expected[-1] == 1.0  # the last optimizer step runs at alpha_end

    params = run.data.params
    assert "None" not in params.values()
    assert (params["variant"], params["apply_to"], params["model"], params["dataset"],
            params["alpha_schedule"], params["epochs"], params["img_size"]) == (
        "softmax_v", "attention", "cct_2_3x2_32", "digits", "linear", "2", "8")
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40

    arts = _artifacts(rid)
    assert {
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "figures/confusion_matrix.png",
        "figures/learning_curves.png",
        "config.yaml",
    } <= arts

    # the best checkpoint reloads with weights_only=True into a working model
    ckpt = torch.load(workdir / "checkpoints" / rid / "best.pt", weights_only=True)
    from ablate.models import create_model

    model = create_model(ckpt["name"], **{k: v for k, v in ckpt["arch"].items() if k != "name"})
    model.load_state_dict(ckpt["model"])
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_same_seed_same_metrics_on_cpu(workdir):
    args = ["run", "--variant", "alpha_remix", "--seed", "3", *FAST]
    assert main(args) == 0 and main(args) == 0
    a, b = (r.info.run_id for r in _runs())
    keys = EPOCH_METRICS + ("loss/train", "acc/train", "optim/lr", "test_acc", "test_loss")
    for key in keys:
        assert _history(a, key) == _history(b, key), key
    assert main(["run", "--variant", "alpha_remix", "--seed", "4", *FAST]) == 0
    c = _runs()[-1].info.run_id
    assert _history(a, "loss/train") != _history(c, "loss/train")


def test_resume_continues_the_same_run_without_duplicate_steps(workdir):
    from ablate.trial.run import train

    cfg = RunConfig(img_size=8, epochs=3, quiet=True, variant="softmax_v", alpha_schedule="cosine")

    def interrupt_after_first(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_epoch=interrupt_after_first)
    (run,) = _runs()
    rid = run.info.run_id
    assert run.info.status == "KILLED"
    assert [s for s, _ in _history(rid, "acc/val")] == [0, 1]

    assert main(["run", "--resume", rid, "--quiet"]) == 0
    (run,) = _runs()
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS + ("alpha/value",):
        assert [s for s, _ in _history(rid, key)] == [0, 1, 2, 3], key
    assert [s for s, _ in _history(rid, "loss/train")] == [1, 2, 3]

    # identical to an uninterrupted run with the same config
    full = train(cfg)
    for key in ("acc/val", "loss/val", "loss/train", "alpha/value"):
        assert _history(rid, key) == _history(full.run_id, key), key


def test_resume_refuses_config_changes_and_unknown_runs(workdir, capsys):
    assert main(["run", *FAST]) == 0
    rid = _runs()[0].info.run_id
    assert main(["run", "--resume", rid, "--epochs", "5"]) == 2
    assert "would change it: epochs" in capsys.readouterr().err
    assert main(["run", "--resume", "0" * 32, "--quiet"]) == 2
    assert "cannot resume run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--variant", "softmaxx"], "valid variants: alpha_remix, laser, laser_remix, softmax,"),
        (["--model", "cct_99"], "unknown model 'cct_99'"),
        (["--dataset", "cifar11"], "choose one of digits, cifar10"),
        (
            ["--variant", "softmax", "--alpha-schedule", "linear"],
            "needs a variant with an 'alpha' parameter",
        ),
        (["--variant", "alpha_remix:gamma=1"], "has no parameter 'gamma'"),
        (["--model", "vit_lite_2_4_32", "--apply-to", "seqpool"], "needs sequence pooling"),
    ],
)
def test_bad_input_one_line_nonzero_exit_nothing_logged(workdir, capsys, args, expected):
    assert main(["run", *FAST, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1
    assert _runs() == []  # refused before an MLflow run was created


def test_config_file_with_flag_override(workdir):
    (workdir / "c.yaml").write_text(
        "variant: softmax_v\nepochs: 1\nimg_size: 8\nquiet: true\nseed: 7\n"
    )
    assert main(["run", "--config", "c.yaml", "--seed", "9"]) == 0
    params = _runs()[0].data.params
    assert (params["variant"], params["epochs"], params["seed"]) == ("softmax_v", "1", "9")


def test_diverging_run_fails_with_reason_and_keeps_last_good_checkpoint(workdir):
    # A variant that turns to NaN once alpha reaches 1: epoch 1 is fine, epoch 2 diverges.
    (workdir / "explode.py").write_text(
        textwrap.dedent(
            """
            import torch
            from variants import register_attention
            from variants.softmax import softmax

            @register_attention("explode", params={"alpha": 0.0})
            def explode(q, k, v, *, mask=None, dropout_p=0.0, scale=None, alpha=0.0):
                out = softmax(q, k, v, mask=mask, dropout_p=dropout_p, scale=scale)
                # multiply by a selected factor: torch.where(c, out * nan, out) would put NaN
                # into the gradient of the unselected branch from the first step on
                nan = torch.full_like(alpha, float("nan"))
                factor = torch.where(alpha >= 0.5, nan, torch.ones_like(alpha))
                return out * factor
            """
        )
    )
    code = main(
        [
            # one jump: alpha 0 for the first half of the run (epoch 1), 1 for the second
            "run",
            "--variant-file",
            "explode.py",
            "--variant",
            "explode",
            "--alpha-schedule",
            "step",
            "--alpha-levels",
            "1",
            *FAST,
        ]
    )
    assert code == 2
    (run,) = _runs()
    assert run.info.status == "FAILED"
    assert "training diverged" in run.data.tags["failure_reason"]
    assert [s for s, _ in _history(run.info.run_id, "acc/val")] == [0, 1]  # epoch 1 kept
    last = torch.load(workdir / "checkpoints" / run.info.run_id / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_list_commands(capsys):
    import json

    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "softmax_v" in out and "alpha=1.0" in out and "beta=None" in out
    assert main(["models", "cct_7*", "--output", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert "cct_7_3x1_32" in {r["name"] for r in rows}
    assert all(r["name"].startswith("cct_7") for r in rows)
