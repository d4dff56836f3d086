"""A throwaway, real PostgreSQL cluster: a second server for the tests that need two
(placement, move, restore: tests/support/pgcluster.py) and for `make bench-tenantdb`
(50 tenants on 2 servers, bench/tenantdb.py).

`running_cluster()` runs `initdb` into a fresh temp directory and starts the
server with `pg_ctl` on a free loopback port: trust authentication, listening on 127.0.0.1
only (and a Unix socket inside the temp directory, not /var/run), fsync off and small
buffers — a throwaway server that starts in about a second. It is stopped (`pg_ctl stop -m
immediate`, then the postmaster killed if it is still there) and its directory removed at
the end of the session, also when a test or the start itself failed. Without `initdb`/
`pg_ctl` (looked for on PATH, then in /usr/lib/postgresql/*/bin) the tests using it are
skipped with the reason shown. As root (PostgreSQL refuses to run as root) the cluster runs
as the `postgres` user, which then owns the temp directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
START_TIMEOUT_SECONDS = 60
_SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1",
    "-c fsync=off",
    "-c synchronous_commit=off",
    "-c full_page_writes=off",
    "-c shared_buffers=16MB",
    "-c max_connections=60",
    "-c log_min_messages=warning",
)


class ClusterUnavailable(Exception):
    """This machine cannot run a throwaway cluster; the message says why."""


@dataclass
class PgCluster:
    """A running throwaway PostgreSQL server."""

    root: Path
    port: int
    started_in_seconds: float = 0.0
    _owner: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, database: str = "postgres", *, driver: str = "postgresql+asyncpg") -> str:
        """A SQLAlchemy URL of `database` on this server, as the superuser."""
        return f"{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg DSN of `database` on this server."""
        return self.url(database, driver="postgresql")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"


def find_tool(name: str) -> str | None:
    """`name` on PATH, else the newest /usr/lib/postgresql/<version>/bin/`name`."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run(command: list[str], owner: tuple[int, int] | None, timeout: float) -> None:
    kwargs: dict[str, object] = {}
    if owner is not None:
        kwargs = {"user": owner[0], "group": owner[1], "extra_groups": []}
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        output = result.stdout.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): {output}")


def _owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterUnavailable(
            "running as root and there is no `postgres` user to run a cluster as"
        ) from None
    return account.pw_uid, account.pw_gid


def _wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the second PostgreSQL did not listen on port {port}")


def _stop(cluster: PgCluster, pg_ctl: str) -> None:
    """Stop the server we started; kill its postmaster (our child's PID, from its pid
    file) when pg_ctl cannot."""
    if not (cluster.data / "postmaster.pid").exists():
        return
    with contextlib.suppress(Exception):
        _run(
            [pg_ctl, "stop", "-D", str(cluster.data), "-m", "immediate", "-w", "-t", "20"],
            cluster._owner,
            30,
        )
    pid_file = cluster.data / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(Exception):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    """Start a throwaway cluster; stop it and remove its directory on the way out."""
    initdb, pg_ctl = find_tool("initdb"), find_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ClusterUnavailable(
            "initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin): no 2nd cluster"
        )
    owner = _owner()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="tenantry-pgcluster-"))
    cluster = PgCluster(root=root, port=0, _owner=owner)
    try:
        if owner is not None:
            os.chown(root, *owner)
        _run(
            [
                initdb,
                "-D",
                str(cluster.data),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            owner,
            120,
        )
        for attempt in range(3):  # the port may be taken between probing and binding
            cluster.port = free_port()
            options = " ".join((*_SERVER_OPTIONS, f"-p {cluster.port}", f"-k {root}"))
            try:
                _run(
                    [
                        pg_ctl,
                        "start",
                        "-D",
                        str(cluster.data),
                        "-l",
                        str(cluster.log),
                        "-w",
                        "-t",
                        str(START_TIMEOUT_SECONDS),
                        "-o",
                        options,
                    ],
                    owner,
                    START_TIMEOUT_SECONDS + 10,
                )
                _wait_for_port(cluster.port, time.monotonic() + 10)
                break
            except RuntimeError as exc:
                _stop(cluster, pg_ctl)
                if attempt == 2:
                    log = cluster.log.read_text() if cluster.log.exists() else ""
                    message = f"the 2nd PostgreSQL did not start: {log[-2000:]}"
                    raise RuntimeError(message) from exc
        cluster.started_in_seconds = time.monotonic() - started
        yield cluster
    finally:
        _stop(cluster, pg_ctl)
        shutil.rmtree(root, ignore_errors=True)
