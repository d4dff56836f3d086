"""Row-level security on the tenant-resource tables (PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import text

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.rls import APP_ROLE
from tenantry.core.tenancy import TenantContext, bind_tenant
from tests.conftest import NO_RLS
from tests.tenant_helpers import Tenants

pytestmark = [pytest.mark.services, pytest.mark.postgresql_only(NO_RLS)]


async def test_rls_is_enabled_and_forced_on_every_tenant_resource_table(tenants: Tenants) -> None:
    async with tenants.app.state.database.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname IN ('projects', 'tasks', 'idempotency_keys')"
            )
        )
        assert sorted(tuple(r) for r in rows) == [
            ("idempotency_keys", True, True),
            ("projects", True, True),
            ("tasks", True, True),
        ]


async def test_raw_sql_as_the_app_role_sees_only_the_bound_organizations_tasks(
    tenants: Tenants, make_settings: Callable[..., Settings]
) -> None:
    mine, theirs = await tenants.org(), await tenants.org()
    marker = uuid.uuid4().hex
    for org in (mine, theirs):
        await org.task(await org.project(), title=f"{marker} of {org.id}")
    database = Database(make_settings(database_app_role=APP_ROLE))
    try:
        async with database.transaction() as session:
            bind_tenant(session, TenantContext(organization_id=mine.id))
            titles = await session.scalars(
                text("SELECT title FROM tasks WHERE title LIKE :m"), {"m": f"{marker}%"}
            )
            assert list(titles) == [f"{marker} of {mine.id}"]
    finally:
        await database.dispose()
