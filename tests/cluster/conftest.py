"""Fixtures: a one-node SLURM cluster, started once per session.

A test asks for ``slurm`` (the cluster, with ``SLURM_CONF`` pointing at it for every command
the test starts; its jobs are cancelled after the test) and ``study_storage`` (a fresh
database on the session's PostgreSQL server, tests/conftest.py). Where either cannot be
started the tests skip with the reason; under CI (``.ci/run`` installs both) they fail
instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from helpers import unavailable  # tests/helpers.py

from cluster.slurm import ClusterUnavailable, SlurmCluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    try:
        cluster = SlurmCluster().__enter__()
    except ClusterUnavailable as err:
        unavailable(f"no SLURM cluster: {err}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # sbatch, squeue, ... in every subprocess
    try:
        yield cluster
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster; whatever a test left in the queue is cancelled after it."""
    yield slurm_cluster
    slurm_cluster.run("scancel", "--full", "--user=root")


@pytest.fixture
def study_storage(postgres) -> str:
    """A new database for this test's Optuna study; its SQLAlchemy URL."""
    return postgres.sqlalchemy_url
