"""The usage flush with a database per tenant: more organizations with usage than the
per-server engine budget allows at once (each storage figure is read in the organization's
own database; modules/plans/usage.py `flush`)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from tenantry.config import Settings
from tenantry.core.db import utcnow
from tenantry.modules.plans import usage
from tenantry.modules.plans.counters import MemoryUsage
from tenantry.modules.plans.models import UsageDaily
from tenantry.services import services_of
from tests.conftest import client_for
from tests.factories import create_org, register
from tests.tenants.conftest import _overrides

DAY = (utcnow() - dt.timedelta(days=3)).date()  # only this test writes its rows


async def test_a_flush_over_more_organizations_than_the_engine_budget_writes_them_all(
    build_app: Callable[..., Any], control_settings: Callable[..., Settings]
) -> None:
    # 2 connections per server, 1 per tenant database: 2 tenant engines at most.
    settings = control_settings(tenant_database_pool_size=1, tenant_database_connection_budget=2)
    app: FastAPI = await build_app(
        **_overrides(settings), tenant_database_pool_size=1, tenant_database_connection_budget=2
    )
    async with client_for(app) as client:
        owner = await register(client)
        orgs = [uuid.UUID((await create_org(client, owner)).id) for _ in range(3)]
    store = MemoryUsage()
    for org_id in orgs:
        store.records(org_id, DAY, 1)
    database = services_of(app).database
    async with database.session() as session:  # as the worker runs it
        assert await usage.flush(session, store=store) == 3
        await session.commit()
    async with database.engine.connect() as connection:
        written = await connection.execute(
            select(UsageDaily.organization_id, UsageDaily.records_created).where(
                UsageDaily.day == DAY
            )
        )
        assert sorted(written.all()) == sorted((org_id, 1) for org_id in orgs)
    assert await store.take() == {}  # nothing given back: all written
