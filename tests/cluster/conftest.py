"""Fixtures: a one-node SLURM cluster and a PostgreSQL server, each started once per session.

A test asks for ``slurm`` (the cluster, with ``SLURM_CONF`` pointing at it for every command
the test starts; its jobs are cancelled after the test) and ``study_storage`` (a fresh
database on the server). Where either cannot be started the tests skip with the reason;
under CI (``.ci/run`` installs both) they fail instead.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator

import pytest
from conftest import running_in_ci  # tests/conftest.py

from cluster.postgres import PostgresServer, ServerUnavailable
from cluster.slurm import ClusterUnavailable, SlurmCluster


def _unavailable(reason: str) -> None:
    if running_in_ci():
        pytest.fail(f"CI needs this to run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    try:
        cluster = SlurmCluster().__enter__()
    except ClusterUnavailable as err:
        _unavailable(f"no SLURM cluster: {err}")
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install ablate[test])")
    try:
        server = PostgresServer().__enter__()
    except ServerUnavailable as err:
        _unavailable(f"no PostgreSQL server: {err}")
    try:
        yield server
    finally:
        server.stop()


_numbers = itertools.count()


@pytest.fixture
def study_storage(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A new database for this test's Optuna study; its URL."""
    name = re.sub(r"\W", "_", request.node.name).lower()[:50]
    return postgres_server.database(f"{name}_{next(_numbers)}")
