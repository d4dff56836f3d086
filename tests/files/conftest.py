"""Files tests: organizations with members of each role, usage and storage inspection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import obstore
import pytest
from fastapi import FastAPI

from tenantry.app import create_app
from tenantry.config import Settings
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.files.usage import files_stored, storage_used
from tenantry.services import services_of
from tests.conftest import client_for
from tests.factories import Org, add_member, create_org, register


@dataclass
class Tenant:
    app: FastAPI
    client: httpx.AsyncClient
    org: Org

    @property
    def id(self) -> str:
        return self.org.id

    @property
    def owner(self) -> dict[str, str]:
        return self.org.owner.headers

    @property
    def path(self) -> str:
        return f"/api/v1/orgs/{self.id}"

    @property
    def files(self) -> str:
        return f"{self.path}/files"

    async def member(self, role: str) -> dict[str, str]:
        """Headers of a new member of this organization with `role`."""
        return (await add_member(self.app, self.client, self.org, role)).headers

    async def usage(self) -> tuple[int, int]:
        """(bytes, files) the organization's usage counter holds."""
        async with self.app.state.database.session(write=False) as session:
            org_id = uuid.UUID(self.id)
            bind_tenant(session, TenantContext(organization_id=org_id))
            return await storage_used(session, org_id), await files_stored(session, org_id)

    async def stored_keys(self) -> list[str]:
        """Every object in storage under this organization's prefix."""
        store = services_of(self.app).storage.store
        keys: list[str] = []
        async for batch in obstore.list(store, prefix=f"orgs/{self.id}/"):
            keys.extend(item["path"] for item in batch)
        return keys


async def start_files_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app of its own (other settings), started for the duration of the iteration."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def files_app(app: FastAPI) -> FastAPI:
    return app


@pytest.fixture
async def http(files_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(files_app) as client:
        yield client


NewTenant = Callable[..., Any]


async def make_tenant(app: FastAPI, client: httpx.AsyncClient) -> Tenant:
    """A new organization (created over HTTP by a newly registered owner)."""
    return Tenant(app=app, client=client, org=await create_org(client, await register(client)))


@pytest.fixture
def new_tenant(files_app: FastAPI, http: httpx.AsyncClient) -> NewTenant:
    async def factory() -> Tenant:
        return await make_tenant(files_app, http)

    return factory
