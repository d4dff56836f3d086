"""Organizations and members for the tenant-resource tests.

`Tenants.org()` makes an organization (over HTTP, with a fresh owner); `org.join(role)`
adds a member; `org.key(permissions)` the headers of an API key the owner created;
`org.project()` / `org.task(project)` create resources over HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import factories
from tests.conftest import client_for
from tests.factories import Account, add_member, api_key_headers, create_api_key, register


@dataclass
class Org:
    tenants: Tenants
    org: factories.Org

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.org.id)

    @property
    def owner(self) -> Account:
        return self.org.owner

    def url(self, path: str = "") -> str:
        return f"{self.org.path}{path}"

    async def engine(self) -> AsyncEngine:
        """The engine holding this organization's tenant rows: the one database in the
        shared mode, the organization's own with TENANCY_MODE=database."""
        database = self.tenants.app.state.database
        routing = database.routing
        return await routing.engine_of(self.id) if routing is not None else database.engine

    async def join(self, role: str) -> Account:
        return await add_member(self.tenants.app, self.tenants.client, self.org, role)

    async def key(self, permissions: list[str]) -> dict[str, str]:
        """Headers of an API key with `permissions`, created by the owner (acts for them)."""
        return api_key_headers(await create_api_key(self.tenants.client, self.org, permissions))

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
        return Org(self, await factories.create_org(self.client, owner))


@pytest.fixture
async def tenants(app: FastAPI) -> AsyncIterator[Tenants]:
    async with client_for(app) as http:
        yield Tenants(app, http)
