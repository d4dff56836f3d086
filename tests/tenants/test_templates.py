"""New tenant databases are copies of a per-server template at the head revision
(servers.py): the copy is the migrated schema, the template is built once and reused,
a half-built or outdated template is never used, and create + migrate is the fallback.

On PostgreSQL the tests' servers are one cluster, where the template is shared: each test
starts by dropping the templates so it sees its own build.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenantry.core.db import Database
from tenantry.core.migrate import alembic_config
from tenantry.core.tenantdb import control_only_tables, tenant_database_tables
from tenantry.modules.tenants import servers as servers_module
from tenantry.modules.tenants.servers import (
    BUILDING_PREFIX,
    TenantServer,
    database_name,
    schema_revision,
    template_name,
)
from tenantry.modules.tenants.service import TenantDatabases
from tests.conftest import USES_SERVICES, client_for
from tests.factories import create_org, register
from tests.tenants.test_provisioning import registry_row, tenants_of


async def _only_server(app: FastAPI) -> tuple[TenantDatabases, TenantServer]:
    tenants = tenants_of(app)
    (server,) = tenants.servers.values()
    for database in await server.template_databases():  # see the module docstring
        await server.drop_database(database)
    return tenants, server


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in inspector.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (k["referred_table"], tuple(k["constrained_columns"]))
                for k in inspector.get_foreign_keys(table)
            ),
        }
    return schema


async def schema_of(url: str) -> dict[str, Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_schema)
    finally:
        await engine.dispose()


class Migrations:
    """Counts `TenantServer.migrate` runs (the whole revision chain, each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.databases: list[str] = []
        original = TenantServer.migrate

        async def counted(server: TenantServer, database: str, executor: Any = None) -> Any:
            self.databases.append(database)
            return await original(server, database, executor)

        monkeypatch.setattr(TenantServer, "migrate", counted)


async def create(app: FastAPI) -> uuid.UUID:
    async with client_for(app) as client:
        org = await create_org(client, await register(client))
    row = await registry_row(app, org.id)
    assert row is not None
    assert row.state == "ready"
    return uuid.UUID(org.id)


async def test_a_copied_database_has_exactly_the_schema_of_a_migrated_one(
    tenant_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants, server = await _only_server(tenant_app)
    migrations = Migrations(monkeypatch)
    org = await create(tenant_app)
    copied = database_name(org)
    assert copied not in migrations.databases  # a copy, not migrated itself

    reference = database_name(uuid.uuid4())  # the migrate path, as before templates
    await server.create_database(reference)
    try:
        assert await server.migrate(reference) == tenants.head_revision()
        copy_url, reference_url = server.database_url(copied), server.database_url(reference)
        assert await schema_revision(copy_url) == tenants.head_revision()
        copy_schema = await schema_of(copy_url)
        assert copy_schema == await schema_of(reference_url)
        control, tenant = control_only_tables(), tenant_database_tables()
        keys = [
            (table, key[0])
            for table, found in copy_schema.items()
            if table in tenant
            for key in found["foreign_keys"]
        ]
        # The foreign keys to control tables were detached in the template; the others kept.
        assert [key for key in keys if key[1] in control] == []
        assert [key for key in keys if key[1] in tenant] != []
    finally:
        await server.drop_database(reference)


async def test_the_template_is_built_once_and_reused(
    tenant_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants, server = await _only_server(tenant_app)
    migrations = Migrations(monkeypatch)
    first = await create(tenant_app)
    assert len(migrations.databases) == 1  # the template's build
    assert migrations.databases[0].startswith(BUILDING_PREFIX)
    template = template_name(tenants.head_revision())
    assert await server.template_databases() == [template]
    second = await create(tenant_app)
    third = await create(tenant_app)
    assert len(migrations.databases) == 1  # copies: no migration ran for them
    for org in (first, second, third):
        url = server.database_url(database_name(org))
        assert await schema_revision(url) == tenants.head_revision()


async def test_a_half_built_template_is_removed_and_never_used(
    tenant_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build killed midway leaves a `tenant_tplbuild…` database (here an empty one,
    started long ago): it is not taken for the template, and is dropped."""
    tenants, server = await _only_server(tenant_app)
    crashed = f"{BUILDING_PREFIX}{int(time.time()) - 3600}x{uuid.uuid4().hex[:10]}"
    await server.create_database(crashed)
    running = f"{BUILDING_PREFIX}{int(time.time())}x{uuid.uuid4().hex[:10]}"
    await server.create_database(running)  # another process's build, in progress
    migrations = Migrations(monkeypatch)
    org = await create(tenant_app)
    assert len(migrations.databases) == 1  # a template of its own was built
    assert await schema_revision(server.database_url(database_name(org))) == (
        tenants.head_revision()
    )
    assert not await server.database_exists(crashed)
    assert await server.database_exists(running)
    await server.drop_database(running)

    # `tenantry tenants provision` (repair) removes one too.
    await server.create_database(crashed)
    await tenants.repair(grace_seconds=0)
    assert not await server.database_exists(crashed)
    assert await server.template_databases() == [template_name(tenants.head_revision())]


async def test_a_template_of_an_older_revision_is_not_used_and_is_dropped(
    tenant_app: FastAPI,
) -> None:
    tenants, server = await _only_server(tenant_app)
    old = template_name("0021")
    assert old is not None
    await server.create_database(old)
    await asyncio.to_thread(command.upgrade, alembic_config(server.database_url(old)), "0021")
    org = await create(tenant_app)
    assert await schema_revision(server.database_url(database_name(org))) == (
        tenants.head_revision()
    )
    assert await server.template_databases() == [template_name(tenants.head_revision())]


async def test_a_failed_copy_falls_back_to_create_and_migrate(
    tenant_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants, server = await _only_server(tenant_app)
    await create(tenant_app)  # the template exists from here on

    def refused(*args: Any) -> bool:
        raise RuntimeError("the template is being accessed by other users")

    async def refused_async(*args: Any) -> bool:
        refused()
        return False

    if server.is_sqlite:
        monkeypatch.setattr(TenantServer, "_copy_sqlite", refused)
    else:
        monkeypatch.setattr(TenantServer, "_copy_postgresql", refused_async)
    migrations = Migrations(monkeypatch)
    org = await create(tenant_app)
    assert migrations.databases == [database_name(org)]  # created and migrated instead
    url = server.database_url(database_name(org))
    assert await schema_revision(url) == tenants.head_revision()


async def test_a_copy_at_the_wrong_revision_is_dropped_and_migrated_instead(
    tenant_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's revision is checked: a template that is not what its name says (here
    the check sees another revision) never yields a database at the wrong revision."""
    tenants, server = await _only_server(tenant_app)
    await create(tenant_app)
    checked = servers_module.schema_revision
    seen: list[str] = []

    async def wrong(url: str) -> str | None:
        seen.append(url)
        return "0001" if len(seen) == 1 else await checked(url)

    monkeypatch.setattr(servers_module, "schema_revision", wrong)
    migrations = Migrations(monkeypatch)
    org = await create(tenant_app)
    assert migrations.databases == [database_name(org)]
    assert await checked(server.database_url(database_name(org))) == tenants.head_revision()
    assert await server.template_databases() == []  # the wrong template went
    await create(tenant_app)  # and the next provisioning built a good one
    assert len(migrations.databases) == 2
    assert await server.template_databases() == [template_name(tenants.head_revision())]


async def test_templates_are_not_tenants(tenant_app: FastAPI) -> None:
    """Not listed (`tenants list`, GET /admin/tenants read `list_tenants`), and `repair`
    neither provisions nor removes one as an orphan."""
    tenants, server = await _only_server(tenant_app)
    org = await create(tenant_app)
    template = template_name(tenants.head_revision())
    database: Database = tenant_app.state.database
    async with database.session(write=False) as session:
        listed, total = await tenants.list_tenants(session, offset=0, limit=100)
    assert total == 1
    assert [info.organization_id for info in listed] == [org]
    outcomes = await tenants.repair(grace_seconds=0)
    assert outcomes == []
    assert await server.template_databases() == [template]


async def test_two_builds_at_once_leave_one_template(tenant_app: FastAPI) -> None:
    """The loser of the publication drops its copy and uses the winner's."""
    tenants, server = await _only_server(tenant_app)
    head = tenants.head_revision()
    assert head is not None
    built = await asyncio.gather(server.ensure_template(head), server.ensure_template(head))
    assert built == [template_name(head), template_name(head)]
    assert await server.template_databases() == [template_name(head)]


@pytest.mark.skipif(not USES_SERVICES, reason="PostgreSQL's TEMPLATE needs no sessions on it")
async def test_a_template_in_use_is_not_copied_and_the_database_is_migrated(
    tenant_app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refuses to copy a database another session is connected to (after
    waiting 5 s for it to leave): the session is seen first and the database is created
    and migrated at once, without that wait."""
    tenants, server = await _only_server(tenant_app)
    await create(tenant_app)
    template = template_name(tenants.head_revision())
    assert template is not None
    dsn = server.database_url(template).replace("postgresql+asyncpg://", "postgresql://", 1)
    session = await asyncpg.connect(dsn)
    try:
        migrations = Migrations(monkeypatch)
        org = await create(tenant_app)
    finally:
        await session.close()
    assert migrations.databases == [database_name(org)]
    assert await schema_revision(server.database_url(database_name(org))) == (
        tenants.head_revision()
    )
    assert "connected to the template" in caplog.text  # not PostgreSQL's refusal
