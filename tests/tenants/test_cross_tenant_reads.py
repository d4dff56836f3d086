"""Platform-wide reads of tenant rows in database mode: refused on the control database
(`TenantRouting.bind_for`), done per tenant database (`TenantReads`) by the GDPR export
and `/admin/orgs` (modules/admin), on SQLite files or PostgreSQL databases."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.errors import TenantUnavailable
from tenantry.core.tenancy import ALL_TENANTS, TenantScopeError
from tenantry.modules.audit.models import AuditLog
from tenantry.modules.files.models import StorageUsage, StoredFile
from tenantry.modules.tenants.service import TenantDatabases
from tenantry.modules.users.models import PlatformRole
from tenantry.services import services_of
from tests.conftest import client_for
from tests.factories import Account, Org, add_member, create_account, create_org, register

PNG = b"\x89PNG\r\n\x1a\n" + b"cross-tenant" * 40


def tenants_of(app: FastAPI) -> TenantDatabases:
    tenants = services_of(app).tenant_databases
    assert tenants is not None
    return tenants


async def upload(client: httpx.AsyncClient, org: Org, who: Account, name: str) -> dict[str, str]:
    response = await client.post(
        f"{org.path}/files", files={"file": (name, PNG, "image/png")}, headers=who.headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, str] = response.json()["data"]
    return data


async def project(client: httpx.AsyncClient, org: Org, who: Account) -> str:
    response = await client.post(
        f"{org.path}/projects", json={"name": f"P {uuid.uuid4().hex[:6]}"}, headers=who.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def test_an_unbound_cross_tenant_read_of_tenant_rows_is_refused(tenant_app: FastAPI) -> None:
    async with client_for(tenant_app) as client:
        org = await create_org(client, await register(client))
        await upload(client, org, org.owner, "a.png")
    database = tenant_app.state.database
    async with database.session(write=False) as session:
        # On the statement or passed to execute: the control database's tenant tables are
        # empty, so either would silently answer nothing.
        for statement, options in (
            (select(StorageUsage).execution_options(**{ALL_TENANTS: True}), {}),
            (select(StoredFile), {ALL_TENANTS: True}),
        ):
            with pytest.raises(TenantScopeError, match=r"TenantReads\.read_each"):
                await session.scalars(statement, execution_options=options)
    async with database.session(write=False) as session:
        # Audit entries (a companion): the control database's part is real and is read.
        entries = list(
            await session.scalars(
                select(AuditLog)
                .where(AuditLog.organization_id == uuid.UUID(org.id))
                .execution_options(**{ALL_TENANTS: True})
            )
        )
    assert "organization.created" in {entry.action for entry in entries}
    assert "file.created" not in {entry.action for entry in entries}  # in its database


async def test_the_export_lists_files_and_resource_entries_of_organizations_left(
    tenant_app: FastAPI,
) -> None:
    async with client_for(tenant_app) as client:
        left = await create_org(client, await register(client))
        other = await create_org(client, await register(client))  # never joined
        subject = await add_member(tenant_app, client, left, "manager")
        bystander = await add_member(tenant_app, client, left, "manager")
        kept = await upload(client, left, subject, "mine.png")
        project_id = await project(client, left, subject)
        theirs = await upload(client, left, bystander, "theirs.png")
        await project(client, left, bystander)
        await upload(client, other, other.owner, "elsewhere.png")
        gone = await client.delete(f"{left.path}/members/{subject.id}", headers=subject.headers)
        assert gone.status_code == 204, gone.text

        response = await client.get("/api/v1/users/me/export", headers=subject.headers)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["memberships"] == []  # left: the membership is gone
        assert [f["id"] for f in data["files"]] == [kept["id"]]
        assert theirs["id"] not in response.text
        entries = data["auditEntries"]
        actions = {(e["action"], e["entityId"]) for e in entries}
        assert ("project.created", project_id) in actions  # the tenant database's
        assert ("file.created", kept["id"]) in actions
        assert "member.left" in {e["action"] for e in entries}  # the control database's
        assert {e["organizationId"] for e in entries} == {left.id}
        stamps = [e["createdAt"] for e in entries]
        assert stamps == sorted(stamps)

        # The bystander's export has their rows, none of the subject's.
        response = await client.get("/api/v1/users/me/export", headers=bystander.headers)
        data = response.json()["data"]
        assert [f["id"] for f in data["files"]] == [theirs["id"]]
        assert kept["id"] not in response.text
        assert project_id not in response.text


async def test_admin_orgs_storage_is_read_from_each_database(tenant_app: FastAPI) -> None:
    async with client_for(tenant_app) as client:
        admin = await create_account(tenant_app, client, role=PlatformRole.ADMIN)
        stored = await create_org(client, await register(client))
        empty = await create_org(client, await register(client))
        size = int((await upload(client, stored, stored.owner, "a.png"))["size"])
        await upload(client, stored, stored.owner, "b.png")
        response = await client.get(
            "/api/v1/admin/orgs", params={"limit": 100}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        storage = {row["id"]: row["storageBytes"] for row in response.json()["data"]}
    assert storage[stored.id] == 2 * size
    assert storage[empty.id] == 0


async def test_a_cross_tenant_read_fails_whole_when_one_database_is_unavailable(
    tenant_app: FastAPI,
) -> None:
    async with client_for(tenant_app) as client:
        org = await create_org(client, await register(client))
    reads = tenants_of(tenant_app).reads
    assert await reads.serving_organizations() == [uuid.UUID(org.id)]
    assert await reads.serving_organizations([uuid.uuid4()]) == []

    async def used(session: AsyncSession) -> int:
        return int(await session.scalar(select(StorageUsage.bytes_used)) or 0) + 1

    assert await reads.read_each([uuid.UUID(org.id)], used) == {uuid.UUID(org.id): 1}
    with pytest.raises(TenantUnavailable):  # itself, not an exception group (503)
        await reads.read_each([uuid.UUID(org.id), uuid.uuid4()], used)
