"""Provisioning through the API: a new organization's database is created on the emptier
server and migrated before the 201; a project lands there, not in the control database; a
failure leaves nothing; hard deletion drops the database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.jobs import unit_of_work
from tenantry.modules.tenants.servers import is_template
from tenantry.modules.tenants.service import TenantDatabases
from tenantry.modules.users.models import PlatformRole
from tests.conftest import DATABASE_PER_TENANT, USES_SERVICES, client_for
from tests.factories import create_account, create_org, register
from tests.tenants.conftest import Servers, _overrides


def tenants_of(app: FastAPI) -> TenantDatabases:
    tenants = app.state.services.tenant_databases
    assert isinstance(tenants, TenantDatabases)
    return tenants


async def registry_row(app: FastAPI, org_id: str) -> Any:
    database: Database = app.state.database
    async with database.engine.connect() as connection:
        return (
            await connection.execute(
                text("SELECT * FROM tenant_databases WHERE organization_id = :id"),
                {"id": uuid.UUID(org_id).hex if database.is_sqlite else uuid.UUID(org_id)},
            )
        ).first()


async def test_creating_an_organization_provisions_a_migrated_database(
    tenant_app: FastAPI,
) -> None:
    tenants = tenants_of(tenant_app)
    async with client_for(tenant_app) as client:
        org = await create_org(client, await register(client))
    row = await registry_row(tenant_app, org.id)
    assert row is not None
    assert row.state == "ready"
    assert row.schema_revision == tenants.head_revision()
    (server,) = tenants.servers.values()
    assert await server.database_exists(row.database)
    engine = await tenants.routing.engine_of(uuid.UUID(org.id))
    async with engine.connect() as connection:
        revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert revision == tenants.head_revision()


async def test_a_project_lands_in_the_tenant_database_and_not_in_the_control_one(
    tenant_app: FastAPI,
) -> None:
    """The routing (AppSession.get_bind) is what sends it there: without it, this fails."""
    tenants = tenants_of(tenant_app)
    async with client_for(tenant_app) as client:
        org = await create_org(client, await register(client))
        created = await client.post(
            f"/api/v1/orgs/{org.id}/projects", json={"name": "Apollo"}, headers=org.owner.headers
        )
        assert created.status_code == 201, created.text
        project_id = uuid.UUID(created.json()["data"]["id"])
        task = await client.post(
            f"/api/v1/orgs/{org.id}/projects/{project_id}/tasks",
            json={"title": "Land"},
            headers=org.owner.headers,
        )
        assert task.status_code == 201, task.text
        fetched = await client.get(
            f"/api/v1/orgs/{org.id}/projects/{project_id}", headers=org.owner.headers
        )
        assert fetched.status_code == 200, fetched.text
        audit = await client.get(f"/api/v1/orgs/{org.id}/audit-logs", headers=org.owner.headers)
    control: Database = tenant_app.state.database
    tenant = await tenants.routing.engine_of(uuid.UUID(org.id))
    key = project_id.hex if control.is_sqlite else project_id

    async def count(engine: Any, sql: str) -> int:
        async with engine.connect() as connection:
            return int(await connection.scalar(text(sql), {"id": key}) or 0)

    assert await count(tenant, "SELECT count(*) FROM projects WHERE id = :id") == 1
    assert await count(control.engine, "SELECT count(*) FROM projects WHERE id = :id") == 0
    assert await count(tenant, "SELECT count(*) FROM tasks WHERE project_id = :id") == 1
    assert await count(control.engine, "SELECT count(*) FROM tasks WHERE project_id = :id") == 0
    # The change and its audit entry in the tenant database; the organization's creation
    # (a control change) in the control database; the API lists both.
    sql = "SELECT count(*) FROM audit_logs WHERE entity_id = :id"
    assert await count(tenant, sql) == 1
    assert await count(control.engine, sql) == 0
    assert audit.status_code == 200, audit.text
    actions = [entry["action"] for entry in audit.json()["data"]]
    assert actions == ["task.created", "project.created", "organization.created"]
    assert audit.json()["meta"]["total"] == 3


async def test_a_new_tenant_goes_to_the_server_holding_the_fewest(
    build_app: Callable[..., Any],
    control_settings: Callable[..., Settings],
    servers: Servers,
) -> None:
    first = control_settings().tenant_database_servers[0]
    one = await build_app(**_overrides(control_settings()))
    async with client_for(one) as client:
        for _ in range(2):
            await create_org(client, await register(client))
    second = await servers.new()
    both = await build_app(**_overrides(control_settings(tenant_database_servers=[first, second])))
    names = list(tenants_of(both).servers)
    placed = []
    async with client_for(both) as client:
        for _ in range(3):
            org = await create_org(client, await register(client))
            placed.append((await registry_row(both, org.id)).server)
    # 2 on the first: the next two go to the second; then they are equal (the first wins).
    assert placed == [names[1], names[1], names[0]]


async def test_a_failed_provisioning_leaves_no_organization_and_no_database(
    build_app: Callable[..., Any], control_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    if USES_SERVICES:
        unreachable = "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"  # nothing listens
    else:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where the tenant directory should be")
        unreachable = str(blocker)
    app = await build_app(**_overrides(control_settings(tenant_database_servers=[unreachable])))
    async with client_for(app) as client:
        owner = await register(client)
        response = await client.post("/api/v1/orgs", json={"name": "Doomed"}, headers=owner.headers)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "tenant_unavailable"
        assert "Retry-After" in response.headers
        mine = await client.get("/api/v1/orgs", headers=owner.headers)
    assert mine.json()["data"] == []
    database: Database = app.state.database
    async with database.engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM tenant_databases")) == 0
        assert await connection.scalar(text("SELECT count(*) FROM organizations")) == 0


async def test_a_rolled_back_creation_discards_the_database(tenant_app: FastAPI) -> None:
    """The database is made first; a 409 after it (a taken slug) must not leave it behind."""
    tenants = tenants_of(tenant_app)
    async with client_for(tenant_app) as client:
        taken = await create_org(client, await register(client))
        owner = await register(client)
        response = await client.post(
            "/api/v1/orgs", json={"name": "Twin", "slug": taken.slug}, headers=owner.headers
        )
    assert response.status_code == 409, response.text
    database: Database = tenant_app.state.database
    async with database.engine.connect() as connection:
        databases = list(await connection.scalars(text("SELECT database FROM tenant_databases")))
    assert len(databases) == 1  # the first organization's only
    (server,) = tenants.servers.values()
    if not USES_SERVICES:
        files = Path(server.setting).iterdir()  # the server's template is no tenant's
        assert sorted(p.name for p in files if p.suffix == ".db" and not is_template(p.stem)) == [
            f"{databases[0]}.db"
        ]


async def test_hard_deletion_drops_the_organizations_database(tenant_app: FastAPI) -> None:
    tenants = tenants_of(tenant_app)
    async with client_for(tenant_app) as client:
        org = await create_org(client, await register(client))
    row = await registry_row(tenant_app, org.id)
    (server,) = tenants.servers.values()
    assert await server.database_exists(row.database)
    async with unit_of_work(tenant_app.state.database) as session:
        deleted = await tenants.hard_delete_organization(
            session, tenant_app.state.cache, uuid.UUID(org.id)
        )
    assert deleted
    assert not await server.database_exists(row.database)
    assert await registry_row(tenant_app, org.id) is None


async def test_the_platform_admin_lists_tenant_databases_with_their_size(
    tenant_app: FastAPI,
) -> None:
    async with client_for(tenant_app) as client:
        org = await create_org(client, await register(client))
        member = await client.get("/api/v1/admin/tenants", headers=org.owner.headers)
        assert member.status_code == 403, member.text
        admin = await create_account(tenant_app, client, role=PlatformRole.ADMIN)
        response = await client.get("/api/v1/admin/tenants", headers=admin.headers)
    assert response.status_code == 200, response.text
    (item,) = [i for i in response.json()["data"] if i["organizationId"] == org.id]
    assert item["database"] == f"tenant_{uuid.UUID(org.id).hex}"
    assert item["state"] == "ready"
    assert item["schemaRevision"] == tenants_of(tenant_app).head_revision()
    assert item["sizeBytes"] > 0


@pytest.mark.skipif(DATABASE_PER_TENANT, reason="the shared app is in database mode here")
async def test_shared_mode_has_no_tenant_admin_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/admin/tenants")
    assert response.status_code == 404
