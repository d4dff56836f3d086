"""Fixtures of the plans tests: organizations, a platform admin, a controllable clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tenantry.core.db import utcnow
from tenantry.modules.orgs.access import forget_organization
from tenantry.modules.orgs.models import Organization
from tenantry.modules.users.models import PlatformRole
from tenantry.services import services_of
from tests.factories import Account, create_account
from tests.tenant_helpers import Org, Tenants, tenants

__all__ = ["tenants"]


class Clock:
    """`Services.clock`'s source: the time the plan checks see; `advance(days=31)` moves it."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset

    def advance(self, **delta: float) -> dt.datetime:
        self.offset += dt.timedelta(**delta)
        return self()


@pytest.fixture
def clock(app: FastAPI) -> Iterator[Clock]:
    fake = Clock()
    services_of(app).clock.source = fake
    try:
        yield fake
    finally:
        services_of(app).clock.source = utcnow


@pytest.fixture
async def admin(tenants: Tenants) -> Account:
    return await create_account(tenants.app, tenants.client, role=PlatformRole.ADMIN)


async def set_subscription(
    tenants: Tenants, admin: Account, org: Org, **body: Any
) -> dict[str, Any]:
    response = await tenants.client.put(
        f"/api/v1/admin/orgs/{org.id}/subscription", json=body, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def end_trial_at(app: FastAPI, org: Org, when: dt.datetime) -> None:
    """Move one organization's trial end (the job then runs at the real time: other
    organizations of the shared test database are untouched)."""
    async with app.state.database.transaction() as session:
        await session.execute(
            update(Organization).where(Organization.id == org.id).values(trial_ends_at=when)
        )
        await forget_organization(app.state.cache, session, org.id)
