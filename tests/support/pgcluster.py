"""A second, real PostgreSQL cluster for tests that need two servers (placement, move, restore).

`second_postgres` (session-scoped) is bench/pgcluster.py's throwaway server (initdb + pg_ctl
under a temp dir, loopback only, stopped and removed at the end of the session, also when a
test or the start itself failed). Where the machine cannot run one (no `initdb`/`pg_ctl`,
root without a `postgres` user) the tests using it are skipped with the reason shown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from bench import pgcluster as _cluster
from bench.pgcluster import ClusterUnavailable, PgCluster, find_tool

__all__ = ["PgCluster", "find_tool", "running_cluster", "second_postgres"]


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    """bench/pgcluster.py's `running_cluster`, skipping the test where none can run."""
    if find_tool("initdb") is None or find_tool("pg_ctl") is None:
        pytest.skip("initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin): no 2nd cluster")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(_cluster.running_cluster())
        except ClusterUnavailable as exc:
            pytest.skip(str(exc))
        yield cluster


@pytest.fixture(scope="session")
def second_postgres() -> Iterator[PgCluster]:
    """A second PostgreSQL server for the session (see the module docstring)."""
    with running_cluster() as cluster:
        yield cluster
