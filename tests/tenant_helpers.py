"""Organizations and members for the tenant-resource tests.

`Tenants.org()` makes an organization with an owner; `org.join(role)` adds a member.
Until the organizations module is on this branch, membership lives in a registry
here and the app's tenant resolver (`app.state.tenant_resolver`, the extension point of
core/authz.py) reads it: the bearer token is verified for real, the role comes from the
registry, a non-member gets 404 — exactly the contract of the real resolver.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.app import create_app
from tenantry.config import Settings
from tenantry.core.errors import NotFound, Unauthorized
from tenantry.core.permissions import role_permissions
from tenantry.core.security import InvalidAccessToken
from tenantry.core.tenancy import TenantContext
from tenantry.modules.auth.deps import get_security
from tests.conftest import client_for
from tests.factories import Account, register

# (organization, user) → a role, or an explicit permission set (what an API key carries).
MEMBERSHIPS: dict[tuple[uuid.UUID, uuid.UUID], str | frozenset[str]] = {}


async def registry_resolver(
    request: Request, _session: AsyncSession, org_id: uuid.UUID
) -> TenantContext:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise Unauthorized()
    try:
        claims = get_security(request).tokens.verify(header[7:])
    except InvalidAccessToken:
        raise Unauthorized() from None
    role = MEMBERSHIPS.get((org_id, claims.user_id))
    if role is None:
        raise NotFound("Organization not found")
    if isinstance(role, frozenset):
        return TenantContext(organization_id=org_id, user_id=claims.user_id, permissions=role)
    return TenantContext(
        organization_id=org_id,
        user_id=claims.user_id,
        role=role,
        permissions=role_permissions(role),
    )


@dataclass
class Org:
    tenants: Tenants
    id: uuid.UUID
    owner: Account
    members: list[Account] = field(default_factory=list)

    def url(self, path: str = "") -> str:
        return f"/api/v1/orgs/{self.id}{path}"

    async def join(self, role: str | frozenset[str]) -> Account:
        account = await register(self.tenants.client)
        MEMBERSHIPS[(self.id, uuid.UUID(account.id))] = role
        self.members.append(account)
        return account

    async def project(self, as_: Account | None = None, **fields: Any) -> dict[str, Any]:
        body = {"name": f"Project {uuid.uuid4().hex[:8]}", **fields}
        response = await self.tenants.client.post(
            self.url("/projects"), json=body, headers=(as_ or self.owner).headers
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def task(
        self, project: dict[str, Any], as_: Account | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"title": f"Task {uuid.uuid4().hex[:8]}", **fields}
        response = await self.tenants.client.post(
            self.url(f"/projects/{project['id']}/tasks"),
            json=body,
            headers=(as_ or self.owner).headers,
        )
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@dataclass
class Tenants:
    app: FastAPI
    client: httpx.AsyncClient

    async def org(self) -> Org:
        owner = await register(self.client)
        org_id = uuid.uuid4()
        MEMBERSHIPS[(org_id, uuid.UUID(owner.id))] = "owner"
        return Org(self, org_id, owner)


@pytest.fixture(scope="session")
async def tenant_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    application.state.tenant_resolver = registry_resolver
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def tenants(tenant_app: FastAPI) -> AsyncIterator[Tenants]:
    async with client_for(tenant_app) as http:
        yield Tenants(tenant_app, http)
