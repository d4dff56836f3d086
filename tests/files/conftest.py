"""Files tests: an app, organizations with members of each role, storage inspection.

`Tenant` hides how an organization and its members come to exist, so the tests read the
same whichever way that is.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import obstore
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.app import create_app
from tenantry.config import Settings
from tenantry.core.errors import NotFound
from tenantry.core.permissions import role_permissions
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.files.usage import files_stored, storage_used
from tests.conftest import client_for


async def membership_resolver(
    request: Request, _session: AsyncSession, org_id: uuid.UUID
) -> TenantContext:
    """Stand-in for the organizations module: members are whoever `Tenant` said they are."""
    members: dict[tuple[str, str], str] = request.app.state.test_members
    user = request.headers.get("x-test-user", "")
    role = members.get((str(org_id), user))
    if role is None:
        raise NotFound("Organization not found")
    return TenantContext(
        organization_id=org_id,
        user_id=uuid.UUID(user),
        role=role,
        permissions=role_permissions(role),
    )


@dataclass
class Tenant:
    app: FastAPI
    id: str
    owner: dict[str, str]

    @property
    def path(self) -> str:
        return f"/api/v1/orgs/{self.id}"

    @property
    def files(self) -> str:
        return f"{self.path}/files"

    async def member(self, role: str) -> dict[str, str]:
        """Headers of a new member of this organization with `role`."""
        user = str(uuid.uuid4())
        self.app.state.test_members[(self.id, user)] = role
        return {"x-test-user": user}

    async def usage(self) -> tuple[int, int]:
        """(bytes, files) the organization's usage counter holds."""
        async with self.app.state.database.session(write=False) as session:
            org_id = uuid.UUID(self.id)
            bind_tenant(session, TenantContext(organization_id=org_id))
            return await storage_used(session, org_id), await files_stored(session, org_id)

    async def stored_keys(self) -> list[str]:
        """Every object in storage under this organization's prefix."""
        store = self.app.state.storage.store
        keys: list[str] = []
        async for batch in obstore.list(store, prefix=f"orgs/{self.id}/"):
            keys.extend(item["path"] for item in batch)
        return keys


async def start_files_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    application.state.tenant_resolver = membership_resolver
    application.state.test_members = {}
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def files_app(settings: Settings) -> AsyncIterator[FastAPI]:
    async for application in start_files_app(settings):
        yield application


@pytest.fixture
async def http(files_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(files_app) as client:
        yield client


NewTenant = Callable[..., Any]


async def make_tenant(app: FastAPI, _client: httpx.AsyncClient) -> Tenant:
    tenant = Tenant(app=app, id=str(uuid.uuid4()), owner={})
    tenant.owner = await tenant.member("owner")
    return tenant


@pytest.fixture
def new_tenant(files_app: FastAPI, http: httpx.AsyncClient) -> NewTenant:
    async def factory() -> Tenant:
        return await make_tenant(files_app, http)

    return factory
