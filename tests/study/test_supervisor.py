"""Devices and threads for study workers: round-robin devices, CPU affinity, clear errors."""

from __future__ import annotations

import os

import pytest

from ablate.exceptions import ConfigError
from ablate.study.supervisor import _parse_devices, default_devices, usable_cpus


def test_threads_come_from_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    assert usable_cpus() == len(os.sched_getaffinity(0))


def test_default_devices_are_the_visible_gpus():
    import torch

    expected = tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    assert default_devices() == (expected if torch.cuda.is_available() else ())


def test_device_lists_are_checked():
    assert _parse_devices("cpu,cpu") == ("cpu", "cpu")
    with pytest.raises(ConfigError, match="--devices: give a comma-separated list"):
        _parse_devices(" , ")
    import torch

    if torch.cuda.device_count() < 9:
        with pytest.raises(ConfigError, match="--devices: device: 'cuda:8'"):
            _parse_devices("cpu,cuda:8")


def test_workers_take_devices_round_robin(workdir):
    from mlflow import MlflowClient

    from ablate.study import load_study, run_study

    path = workdir / "devs.yaml"
    path.write_text(
        "name: devs\nbase: {dataset: digits, epochs: 1, img_size: 8, device: auto}\n"
        "grid: {seed: [0, 1]}\n"
    )
    outcome = run_study(load_study(path), devices="cpu", quiet=True)
    assert outcome.complete
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.role = 'trial'")
    assert sorted(r.data.params["device"] for r in runs) == ["cpu", "cpu"]  # not 'auto'
