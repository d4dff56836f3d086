"""`make bench-tenantdb`: database per tenant against shared mode, on the same tenants.

    uv run python -m bench.run --configs tenantdb [--tenants 50] [--tenant-tasks 20]
        [--tenant-rounds 3] [--duration 5] [--warmup 1] [--connections 10,32]

Issue 17's figures: get task by id and create task with `--tenants` organizations on 2
PostgreSQL servers, against the same organizations, rows and load in shared mode, and the
provisioning time per tenant. Both modes are prepared the same way:

1. a fresh control database `tenantry_bench_tdb_<hex>` on `--database-url`'s server,
   migrated by `tenantry migrate`; in database mode a second PostgreSQL server runs for
   the whole configuration (bench/pgcluster.py: initdb + pg_ctl under a temp dir, loopback
   only, stopped and removed afterwards even on failure) and `TENANT_DATABASE_SERVERS`
   lists both servers;
2. a server (`tenantry serve --no-migrate`, the settings of pg1 but no application role:
   the second server has none) registers one owner per organization through the API and
   creates the organizations one at a time: each `POST /orgs` is timed (in database mode
   it creates and migrates the tenant's database on the emptier server: the provisioning
   time per tenant), then a project and `--tenant-tasks` tasks in each;
3. the organizations are put on the enterprise plan (its API rate, 6,000/min, leaves the
   load unthrottled; a trial organization gets 300/min);
4. with both modes prepared, a fresh server for each (no cached plan; both running from
   here on, the idle one costs nothing measurable), whose access tokens are the
   registration's; then `--tenant-rounds` rounds (default 3) of get task by id and create
   task with wrk as in the other configurations (warm-up, then the measured run, at every
   connection count; requests spread over all organizations), the two modes taking turns
   and alternating which goes first. Each mode's figure is its median round (the whole
   run: rps, latencies and CPU of one run), and the report lists every round: on this
   2-core machine, where wrk, both PostgreSQL servers and the server under test share the
   cores, one 5-second run of the same server moved ±20 % between tries, which is the
   width of the bar itself;
5. the control databases and every tenant database are dropped, the bench's Redis keys
   deleted (also when a step failed).

Tenant engines: TENANT_DATABASE_POOL_SIZE=2 and TENANT_DATABASE_CONNECTION_BUDGET=60 keep
every tenant's engine open (30 engines per server for 25 tenants each) within the
connections of the servers (100 on the shared one, 60 on the throwaway one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench import data
from bench.pgcluster import ClusterUnavailable, PgCluster, running_cluster
from bench.report import (
    TENANTDB,
    TENANTDB_SCENARIOS,
    TENANTDB_SHARED,
    Provisioning,
    Result,
    median_runs,
)
from bench.run import (
    BenchError,
    Run,
    _venv_bin,
    clear_redis,
    free_port,
    measure,
    server_env,
    serving,
)
from bench.seed import BENCH_PASSWORD

API = "/api/v1"
REGISTER_CONCURRENCY = 4  # the app hashes 4 passwords at once
SEED_CONCURRENCY = 8
TENANT_POOL_SIZE = 2
TENANT_CONNECTION_BUDGET = 60
PLAN = "enterprise"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@contextlib.contextmanager
def second_server(mode: str) -> Iterator[PgCluster | None]:
    """The throwaway second PostgreSQL server of database mode (none in shared mode)."""
    if mode != TENANTDB:
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(running_cluster())
        except ClusterUnavailable as exc:
            raise BenchError(f"database mode needs a second PostgreSQL server: {exc}") from None
        print(
            f"  second PostgreSQL server on 127.0.0.1:{cluster.port} "
            f"(started in {cluster.started_in_seconds:.1f}s)"
        )
        yield cluster


@contextlib.asynccontextmanager
async def control_database(server_url: str) -> AsyncIterator[str]:
    """A fresh, uniquely named control database; it and its tenants' databases dropped after."""
    name = f"tenantry_bench_tdb_{uuid.uuid4().hex[:10]}"
    admin_dsn = _asyncpg_dsn(server_url.rsplit("/", 1)[0] + "/postgres")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _asyncpg_dsn(server_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield url
    finally:
        tenants: list[str] = []
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            control = await asyncpg.connect(url)
            try:
                tenants = [
                    r[0] for r in await control.fetch("SELECT database FROM tenant_databases")
                ]
            finally:
                await control.close()
        admin = await asyncpg.connect(admin_dsn)
        try:
            # The tenants on the second server go with it; these are the first server's,
            # with the templates new tenant databases were copied from (servers.py).
            templates = [
                r[0]
                for r in await admin.fetch(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, 'tenant_tpl')"
                )
            ]
            for database in [*tenants, *templates, name]:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()


async def _post(
    client: httpx.AsyncClient, path: str, body: dict[str, object], token: str = ""
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(API + path, json=body, headers=headers)
    if response.status_code != 201:
        raise BenchError(f"POST {path}: {response.status_code} {response.text[:300]}")
    found: dict[str, Any] = response.json()["data"]
    return found


async def provision(
    url: str, tenants: int, tasks_per_tenant: int
) -> tuple[list[data.Organization], list[float]]:
    """Owners registered, organizations created one at a time (each `POST /orgs` timed),
    a project and `tasks_per_tenant` tasks in each, all through the API."""
    run_tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        slots = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(n: int) -> tuple[str, str, str]:
            email = f"tdb-{run_tag}-{n}@bench.example.com"
            async with slots:
                found = await _post(
                    client, "/auth/register", {"email": email, "password": BENCH_PASSWORD}
                )
            return str(found["user"]["id"]), email, str(found["accessToken"])

        owners = await asyncio.gather(*(register(n) for n in range(tenants)))
        organizations, seconds = [], []
        for n, (user_id, email, token) in enumerate(owners):
            started = time.perf_counter()
            org = await _post(client, "/orgs", {"name": f"Bench tenant {run_tag} {n}"}, token)
            seconds.append(time.perf_counter() - started)
            organizations.append(
                data.Organization(
                    str(org["id"]), str(org["slug"]), [(user_id, email)], [], [], [token]
                )
            )
        seed_slots = asyncio.Semaphore(SEED_CONCURRENCY)

        async def seed(org: data.Organization) -> None:
            token = org.tokens[0]
            async with seed_slots:
                project = await _post(
                    client, f"/orgs/{org.id}/projects", {"name": "Bench project"}, token
                )
            org.projects = [str(project["id"])]
            for i in range(tasks_per_tenant):
                async with seed_slots:
                    task = await _post(
                        client,
                        f"/orgs/{org.id}/projects/{org.projects[0]}/tasks",
                        {"title": f"seeded task {i}"},
                        token,
                    )
                org.tasks.append((org.projects[0], str(task["id"])))

        await asyncio.gather(*(seed(org) for org in organizations))
    return organizations, seconds


async def _placement(control_url: str, servers: dict[str, str]) -> dict[str, int]:
    """Tenants per server, by the registry (the servers named as the report shows them)."""
    connection = await asyncpg.connect(control_url)
    try:
        rows = await connection.fetch(
            "SELECT server, count(*) FROM tenant_databases WHERE state = 'ready' GROUP BY server"
        )
    finally:
        await connection.close()
    named = {}
    for server, count in rows:
        port = f":{urlsplit(server).port or 5432}/"
        label = next((name for name, url in servers.items() if port in url), server)
        named[label] = int(count)
    return dict(sorted(named.items()))


@dataclass
class Mode:
    """One mode, provisioned and seeded: what its measured server and wrk need."""

    name: str
    env: dict[str, str]
    control_url: str
    data_dir: Path


@contextlib.asynccontextmanager
async def prepared_mode(run: Run, mode: str, logs: Path) -> AsyncIterator[Mode]:
    """Steps 1 to 3 of the module docstring for `mode`; its databases dropped on the way out."""
    options = run.options
    main_server = options.database_url.rsplit("/", 1)[0] + "/postgres"
    print(f"{mode}: {options.tenants} organizations x {options.tenant_tasks} tasks")
    with second_server(mode) as cluster:
        async with control_database(options.database_url) as control_url:
            var_dir = logs / f"var-{mode}"
            env = server_env("pg1", options, var_dir)
            del env["DATABASE_APP_ROLE"]  # the second server has no application role
            env["DATABASE_URL"] = _sqlalchemy_url(control_url)
            env["REDIS_KEY_PREFIX"] += f"{mode}:"  # both modes' servers run at once
            servers: dict[str, str] = {}
            if cluster is not None:
                servers = {
                    "server 1 (:5432)": _sqlalchemy_url(main_server),
                    f"server 2 (:{cluster.port})": cluster.url(),
                }
                env |= {
                    "TENANCY_MODE": "database",
                    "TENANT_DATABASE_SERVERS": ",".join(servers.values()),
                    "TENANT_DATABASE_POOL_SIZE": str(TENANT_POOL_SIZE),
                    "TENANT_DATABASE_CONNECTION_BUDGET": str(TENANT_CONNECTION_BUDGET),
                }
            migrated = await asyncio.create_subprocess_exec(
                _venv_bin("tenantry"), "migrate", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await migrated.communicate()
            if migrated.returncode != 0:
                raise BenchError(f"tenantry migrate ({mode}): {output.decode()[-1500:]}")
            data_dir = await _seed_mode(run, mode, env, logs, control_url, servers)
            yield Mode(mode, env, control_url, data_dir)


async def _seed_mode(
    run: Run, mode: str, env: dict[str, str], logs: Path, control_url: str, servers: dict[str, str]
) -> Path:
    options = run.options
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [_venv_bin("tenantry"), "serve", "--no-migrate", "--port", str(port)]
    with serving(argv, env, logs / f"server-{mode}-seed.log", port):
        started = time.perf_counter()
        organizations, seconds = await provision(url, options.tenants, options.tenant_tasks)
        print(f"  provisioned and seeded in {time.perf_counter() - started:.1f}s")
    placement = await _placement(control_url, servers) if servers else {}
    label = "database mode" if mode == TENANTDB else "shared mode"
    provisioning = Provisioning(label, seconds, placement)
    run.provisioning.append(provisioning)
    print(
        f"  POST /orgs: median {provisioning.median * 1000:.0f} ms, "
        f"p95 {provisioning.p95 * 1000:.0f} ms {placement or ''}"
    )
    control = await asyncpg.connect(control_url)
    try:
        ids = [uuid.UUID(org.id) for org in organizations]
        await control.execute(
            "UPDATE organizations SET plan = $1, subscription_status = 'active' "
            "WHERE id = ANY($2::uuid[])",
            PLAN,
            ids,
        )
    finally:
        await control.close()
    data_dir = logs / f"data-{mode}"
    data.write_data_dir(data_dir, organizations, seed=3)
    return data_dir


async def run_tenantdb(run: Run, logs: Path) -> None:
    """Both modes on the same number of tenants, rows and load, measured in alternating
    rounds (step 4): the median round of each is the figure."""
    options = run.options
    only = options.only
    scenarios = [(s, "all") for s in TENANTDB_SCENARIOS if only is None or s in only]
    clear_redis(options.redis_url)
    try:
        async with contextlib.AsyncExitStack() as stack:
            modes = [
                await stack.enter_async_context(prepared_mode(run, mode, logs))
                for mode in (TENANTDB_SHARED, TENANTDB)
            ]
            measured = []
            for mode in modes:  # fresh servers (no cached plan); both up from here on
                port = free_port()
                argv = [_venv_bin("tenantry"), "serve", "--no-migrate", "--port", str(port)]
                server = stack.enter_context(
                    serving(argv, mode.env, logs / f"server-{mode.name}.log", port)
                )
                store = data.PostgresStore(await asyncpg.connect(mode.control_url))
                stack.push_async_callback(store.close)
                measured.append((mode, f"http://127.0.0.1:{port}", server, store))
            rounds: list[Result] = []
            for n in range(options.tenant_rounds):
                print(f"round {n + 1} of {options.tenant_rounds}")
                # Alternate which mode goes first, so neither always follows the other.
                for mode, url, server, store in measured if n % 2 == 0 else measured[::-1]:
                    before = len(run.results)
                    await measure(
                        run, mode.name, url, scenarios, {"all": mode.data_dir}, store, server
                    )
                    rounds.extend(run.results[before:])
                    del run.results[before:]
            run.tenantdb_rounds = rounds
            run.results.extend(median_runs(rounds))
    finally:
        clear_redis(options.redis_url)
