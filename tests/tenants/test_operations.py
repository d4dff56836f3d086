"""Backup, restore and move of a tenant database (modules/tenants/operations.py), through
the platform admin's endpoints and jobs, on real databases: SQLite files or PostgreSQL
databases (`make test-services`), and a move between two real PostgreSQL clusters."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.errors import TenantUnavailable
from tenantry.core.jobs import Worker
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.core.tenantdb import tenant_database_tables
from tenantry.modules.projects.models import Project
from tenantry.modules.tenants import tasks
from tenantry.modules.tenants.backup import checksum_tables
from tenantry.modules.tenants.operations import OperationFailed
from tenantry.modules.tenants.servers import TenantServer
from tenantry.modules.tenants.service import TenantDatabases
from tenantry.modules.users.models import PlatformRole
from tests.conftest import client_for
from tests.factories import Account, Org, create_account, create_org, register
from tests.support.pgcluster import PgCluster
from tests.tenants.conftest import Servers, _overrides
from tests.tenants.test_provisioning import registry_row, tenants_of

PNG = b"\x89PNG\r\n\x1a\n" + b"backup" * 50
JOB_TYPES = {tasks.BACKUP_JOB, tasks.RESTORE_JOB, tasks.MOVE_JOB}
TABLES = sorted(tenant_database_tables())
FAST_TTL = 0.2  # TENANT_LOCATION_TTL_SECONDS: each move waits it twice


async def two_server_app(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    second: str,
) -> FastAPI:
    first = control_settings().tenant_database_servers[0]
    settings = control_settings(tenant_database_servers=[first, second])
    app: FastAPI = await build_app(**_overrides(settings), tenant_location_ttl_seconds=FAST_TTL)
    return app


def server_names(app: FastAPI) -> list[str]:
    return list(tenants_of(app).servers)


async def populate(client: httpx.AsyncClient, org: Org) -> dict[str, str]:
    """A project, two tasks and an uploaded file."""
    headers = org.owner.headers
    project = await client.post(f"{org.path}/projects", json={"name": "Apollo"}, headers=headers)
    assert project.status_code == 201, project.text
    project_id = project.json()["data"]["id"]
    for title in ("Launch", "Land"):
        task = await client.post(
            f"{org.path}/projects/{project_id}/tasks", json={"title": title}, headers=headers
        )
        assert task.status_code == 201, task.text
    file = await client.post(
        f"{org.path}/files", files={"file": ("pic.png", PNG, "image/png")}, headers=headers
    )
    assert file.status_code == 201, file.text
    return {"project": project_id, "file": file.json()["data"]["id"]}


async def run_jobs(app: FastAPI) -> None:
    worker = Worker(app.state.database, app.state.settings, job_types=JOB_TYPES)
    await worker.drain(within_seconds=120)


async def finished_job(
    app: FastAPI, client: httpx.AsyncClient, org: Org, response: httpx.Response
) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["jobId"]
    await run_jobs(app)
    job = await client.get(f"{org.path}/jobs/{job_id}", headers=org.owner.headers)
    assert job.status_code == 200, job.text
    data: dict[str, Any] = job.json()["data"]
    return data


async def checksums(app: FastAPI, org_id: str) -> dict[str, Any]:
    location = await tenants_of(app).registry.locate(uuid.UUID(org_id))
    assert location is not None
    return await checksum_tables(location.url, TABLES)


async def admin_of(app: FastAPI, client: httpx.AsyncClient) -> Account:
    return await create_account(app, client, role=PlatformRole.ADMIN)


# --- move ---------------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.postgresql_only("pg_dump/pg_restore between two PostgreSQL clusters")
async def test_a_move_between_two_real_clusters_keeps_every_row_and_file(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    second_postgres: PgCluster,
) -> None:
    app = await two_server_app(build_app, control_settings, second_postgres.url("postgres"))
    main, other = server_names(app)
    async with client_for(app) as client:
        moved = await create_org(client, await register(client))  # both empty: the first
        stays = await create_org(client, await register(client))  # then the emptier one
        assert (await registry_row(app, moved.id)).server == main
        assert (await registry_row(app, stays.id)).server == other
        made = await populate(client, moved)
        before = await checksums(app, moved.id)
        old = await registry_row(app, moved.id)
        admin = await admin_of(app, client)

        job = await finished_job(
            app,
            client,
            moved,
            await client.post(
                f"/api/v1/admin/orgs/{moved.id}/move", json={"server": other}, headers=admin.headers
            ),
        )
        assert job["status"] == "succeeded", job
        row = await registry_row(app, moved.id)
        assert (row.server, row.state, row.spare_database) == (other, "ready", None)
        assert await checksums(app, moved.id) == before  # every row, every file reference
        location = await tenants_of(app).registry.locate(uuid.UUID(moved.id))
        assert location is not None
        assert f":{second_postgres.port}/" in location.url
        assert not await tenants_of(app).servers[main].database_exists(old.database)

        # The organization's API works against the new server.
        headers = moved.owner.headers
        project = await client.get(f"{moved.path}/projects/{made['project']}", headers=headers)
        assert project.status_code == 200, project.text
        download = await client.get(f"{moved.path}/files/{made['file']}/download", headers=headers)
        assert download.status_code == 200
        assert download.content == PNG
        created = await client.post(f"{moved.path}/projects", json={"name": "B"}, headers=headers)
        assert created.status_code == 201, created.text
        assert await checksums(app, moved.id) != before

        # Main now holds none, the second cluster two: a new tenant lands on main.
        third = await create_org(client, await register(client))
        assert (await registry_row(app, third.id)).server == main


async def test_writes_during_a_move_get_503_and_reads_200(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
) -> None:
    """The fence is the routing's refusal of writing sessions while the registry says
    `moving`: without it the write lands in the old database after the dump and the
    copies differ (the move is abandoned, this test fails)."""
    app = await two_server_app(build_app, control_settings, await servers.new())
    _main, other = server_names(app)
    seen: dict[str, httpx.Response] = {}
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        made = await populate(client, org)
        before = await checksums(app, org.id)
        headers = org.owner.headers

        async def during(message: str) -> None:
            if message.startswith("restoring"):
                seen["write"] = await client.post(
                    f"{org.path}/projects", json={"name": "During"}, headers=headers
                )
                seen["task"] = await client.patch(
                    f"{org.path}/projects/{made['project']}",
                    json={"name": "Renamed"},
                    headers=headers,
                )
                seen["read"] = await client.get(f"{org.path}/projects", headers=headers)
                seen["one"] = await client.get(
                    f"{org.path}/projects/{made['project']}", headers=headers
                )

        done = await tenants_of(app).operations.move(uuid.UUID(org.id), other, progress=during)
        assert done.server == other
        for name in ("write", "task"):
            response = seen[name]
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "tenant_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        assert seen["read"].status_code == 200, seen["read"].text
        assert seen["read"].json()["meta"]["total"] == 1
        assert seen["one"].status_code == 200
        assert await checksums(app, org.id) == before
        after = await client.post(f"{org.path}/projects", json={"name": "After"}, headers=headers)
        assert after.status_code == 201, after.text


# --- backup and restore -------------------------------------------------------------------------


async def test_backup_then_restore_round_trip_through_http(tenant_app: FastAPI) -> None:
    app = tenant_app
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        headers = org.owner.headers
        await populate(client, org)
        admin = await admin_of(app, client)
        # The dump is taken before the backup's own `files` row is added: a restore brings
        # back the database as it was then.
        at_backup = await checksums(app, org.id)
        backed = await finished_job(
            app,
            client,
            org,
            await client.post(f"/api/v1/admin/orgs/{org.id}/backup", headers=admin.headers),
        )
        assert backed["status"] == "succeeded", backed
        file_id = backed["result"]["fileId"]
        download = await client.get(f"{org.path}/files/{file_id}/download", headers=headers)
        assert download.status_code == 200, download.text
        assert len(download.content) == backed["result"]["size"]
        listed = await client.get(f"{org.path}/files/{file_id}", headers=headers)
        assert listed.json()["data"]["sha256"] == hashlib.sha256(download.content).hexdigest()

        later = await client.post(f"{org.path}/projects", json={"name": "Later"}, headers=headers)
        assert later.status_code == 201
        old = await registry_row(app, org.id)

        restored = await finished_job(
            app,
            client,
            org,
            await client.post(
                f"/api/v1/admin/orgs/{org.id}/restore",
                json={"fileId": file_id},
                headers=admin.headers,
            ),
        )
        assert restored["status"] == "succeeded", restored
        row = await registry_row(app, org.id)
        assert row.database != old.database
        assert row.server == old.server
        assert (row.state, row.spare_database) == ("ready", None)
        (server,) = tenants_of(app).servers.values()
        assert not await server.database_exists(old.database)
        assert await checksums(app, org.id) == at_backup
        projects = await client.get(f"{org.path}/projects", headers=headers)
        assert [p["name"] for p in projects.json()["data"]] == ["Apollo"]
        write = await client.post(f"{org.path}/projects", json={"name": "New"}, headers=headers)
        assert write.status_code == 201, write.text


# --- bad input ----------------------------------------------------------------------------------


async def test_bad_requests_are_refused_and_change_nothing(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
) -> None:
    app = await two_server_app(build_app, control_settings, await servers.new())
    main, other = server_names(app)
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        made = await populate(client, org)
        stranger = await create_org(client, await register(client))
        admin = await admin_of(app, client)
        before = await registry_row(app, org.id)
        base = f"/api/v1/admin/orgs/{org.id}"

        async def refused(path: str, body: Any, status: int, code: str) -> None:
            response = await client.post(path, json=body, headers=admin.headers)
            assert response.status_code == status, response.text
            assert response.json()["code"] == code

        await refused(f"{base}/move", {"server": "postgresql://nowhere/x"}, 400, "validation_error")
        await refused(f"{base}/move", {"server": main}, 400, "validation_error")
        await refused(f"{base}/move", {}, 400, "validation_error")
        await refused(
            f"/api/v1/admin/orgs/{uuid.uuid4()}/move", {"server": other}, 404, "not_found"
        )
        await refused(f"{base}/restore", {"fileId": made["file"]}, 400, "validation_error")
        await refused(f"{base}/restore", {"fileId": str(uuid.uuid4())}, 400, "validation_error")
        # A backup of another organization is not a backup of this one.
        theirs = await finished_job(
            app,
            client,
            stranger,
            await client.post(f"/api/v1/admin/orgs/{stranger.id}/backup", headers=admin.headers),
        )
        await refused(
            f"{base}/restore", {"fileId": theirs["result"]["fileId"]}, 400, "validation_error"
        )
        member = await client.post(f"{base}/backup", headers=org.owner.headers)
        assert member.status_code == 403, member.text
        # Not ready: refused with 409.
        await tenants_of(app)._set(uuid.UUID(org.id), state="failed")
        await refused(f"{base}/move", {"server": other}, 409, "conflict")
        await refused(f"{base}/backup", None, 409, "conflict")
        await tenants_of(app)._set(uuid.UUID(org.id), state="ready")
        after = await registry_row(app, org.id)
        assert (after.server, after.database, after.state) == (
            before.server,
            before.database,
            "ready",
        )


# --- interruptions ------------------------------------------------------------------------------

STEPS = ["writes refused", "waiting", "dumping", "restoring", "comparing", "switching"]


@pytest.mark.parametrize("step", STEPS)
async def test_a_move_interrupted_at_each_step_leaves_the_old_database_serving(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
    step: str,
) -> None:
    app = await two_server_app(build_app, control_settings, await servers.new())
    _main, other = server_names(app)
    tenants = tenants_of(app)
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        await populate(client, org)
        before = await checksums(app, org.id)
        old = await registry_row(app, org.id)

        def interrupt(message: str) -> None:
            if message.startswith(step):
                raise RuntimeError(f"interrupted at {step}")

        with pytest.raises(OperationFailed, match=f"interrupted at {step}"):
            await tenants.operations.move(uuid.UUID(org.id), other, progress=interrupt)
        row = await registry_row(app, org.id)
        assert (row.server, row.database, row.state) == (old.server, old.database, "ready")
        assert row.spare_database is None
        assert await checksums(app, org.id) == before
        assert await _spares_on(tenants, other, org.id) == []
        write = await client.post(
            f"{org.path}/projects", json={"name": "After"}, headers=org.owner.headers
        )
        assert write.status_code == 201, write.text


async def test_a_killed_move_is_repaired_by_provision(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
) -> None:
    """A process killed mid-move runs no clean-up: the registry stays `moving` with the
    half-made copy as its spare; `repair` (tenantry tenants provision) undoes it."""
    app = await two_server_app(build_app, control_settings, await servers.new())
    _main, other = server_names(app)
    tenants = tenants_of(app)
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        await populate(client, org)
        before = await checksums(app, org.id)
        old = await registry_row(app, org.id)
        spare = f"{old.database}xdeadbeef"
        await tenants.operations._fence(uuid.UUID(org.id), other, spare)
        await tenants.servers[other].create_database(spare)  # the half-made target
        assert (await registry_row(app, org.id)).state == "moving"
        refused = await client.post(
            f"{org.path}/projects", json={"name": "x"}, headers=org.owner.headers
        )
        assert refused.status_code == 503

        outcomes = await tenants.repair(grace_seconds=0)
        assert [o.action for o in outcomes] == ["repaired"]
        row = await registry_row(app, org.id)
        assert (row.server, row.database, row.state, row.spare_database) == (
            old.server,
            old.database,
            "ready",
            None,
        )
        assert not await tenants.servers[other].database_exists(spare)
        assert await checksums(app, org.id) == before
        ok = await client.post(
            f"{org.path}/projects", json={"name": "y"}, headers=org.owner.headers
        )
        assert ok.status_code == 201, ok.text


async def _spares_on(tenants: TenantDatabases, server: str, org_id: str) -> list[str]:
    """The organization's copies (made by a restore or move) left on `server`."""
    found: TenantServer = tenants.servers[server]
    prefix = f"tenant_{uuid.UUID(org_id).hex}x"
    if found.is_sqlite:
        return sorted(p.name for p in Path(found.setting).glob(f"*{prefix}*"))
    connection = await asyncpg.connect(found._admin_dsn())
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
        )
    finally:
        await connection.close()
    return sorted(row["datname"] for row in rows)


async def test_a_write_that_reached_the_old_database_after_the_dump_abandons_the_move(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
) -> None:
    """A process that had not learnt the fence and wrote to the old database after the dump:
    the copies differ, the move is abandoned and the write is kept (the old database
    serves). Without the comparison the write would be lost with the old database."""
    app = await two_server_app(build_app, control_settings, await servers.new())
    main, other = server_names(app)
    tenants = tenants_of(app)
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
        await populate(client, org)
        location = await tenants.registry.locate(uuid.UUID(org.id))
        assert location is not None
        engine = create_async_engine(location.url, poolclass=NullPool)

        async def stale_write(message: str) -> None:
            if message.startswith("restoring"):
                async with engine.begin() as connection:
                    await connection.execute(text("UPDATE projects SET name = 'stale'"))

        try:
            with pytest.raises(OperationFailed, match=r"differs .*projects"):
                await tenants.operations.move(uuid.UUID(org.id), other, progress=stale_write)
        finally:
            await engine.dispose()
        row = await registry_row(app, org.id)
        assert (row.server, row.state, row.spare_database) == (main, "ready", None)
        projects = await client.get(f"{org.path}/projects", headers=org.owner.headers)
        assert [p["name"] for p in projects.json()["data"]] == ["stale"]


async def test_another_process_refuses_writes_once_its_location_is_older_than_the_ttl(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
) -> None:
    """Two processes on one registry: the one that did not run the fence keeps its
    remembered (writable) location only for TENANT_LOCATION_TTL_SECONDS, then refuses the
    organization's writes. This is what the operation's wait relies on."""
    app = await two_server_app(build_app, control_settings, await servers.new())
    _main, other = server_names(app)
    tenants = tenants_of(app)
    now = [0.0]
    elsewhere = TenantDatabases(app.state.settings, Database(app.state.settings))
    elsewhere.routing.clock = lambda: now[0]
    try:
        async with client_for(app) as client:
            org = await create_org(client, await register(client))
            await populate(client, org)
        org_id = uuid.UUID(org.id)

        async def write() -> None:
            async with elsewhere.database.transaction() as session:
                bind_tenant(session, TenantContext.system(org_id))
                session.add(Project(name="elsewhere"))

        await write()  # remembers the location, writable
        await tenants.operations._fence(org_id, other, f"tenant_{org_id.hex}xfeedface")
        now[0] += FAST_TTL / 2
        await write()  # still trusted here
        now[0] += FAST_TTL
        with pytest.raises(TenantUnavailable):
            await write()
        async with elsewhere.database.session(write=False) as session:
            bind_tenant(session, TenantContext.system(org_id))
            assert len((await session.scalars(select(Project))).all()) == 3
        await tenants.operations.repair_interrupted(org_id)
    finally:
        await elsewhere.routing.dispose()
        await elsewhere.database.dispose()
