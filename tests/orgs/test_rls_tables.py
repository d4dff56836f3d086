"""Row-level security on the organizations module's tenant tables (PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.factories import create_api_key, create_org, register, unique_email

TENANT_TABLES = ("invitations", "api_keys", "audit_logs")


@pytest.mark.services
async def test_raw_sql_as_the_app_role_sees_only_the_bound_organizations_rows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    a = await create_org(client, await register(client))
    b = await create_org(client, await register(client))
    for org in (a, b):
        await create_api_key(client, org, ["org:read"])
        response = await client.post(
            f"{org.path}/invitations",
            json={"email": unique_email("rls"), "role": "viewer"},
            headers=org.owner.headers,
        )
        assert response.status_code == 201
    async with app.state.database.engine.begin() as conn:
        await conn.execute(text("SET LOCAL ROLE tenantry_app"))
        await conn.execute(text("SELECT set_config('app.org_id', :org, true)"), {"org": b.id})
        for table in TENANT_TABLES:
            rows = await conn.execute(
                text(
                    f"SELECT DISTINCT organization_id FROM {table} "
                    "WHERE organization_id IN (:a, :b)"
                ),
                {"a": uuid.UUID(a.id), "b": uuid.UUID(b.id)},
            )
            assert {str(r[0]) for r in rows} == {b.id}, table
