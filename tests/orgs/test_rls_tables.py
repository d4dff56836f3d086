"""Row-level security on the organizations module's tenant tables (PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import NO_RLS
from tests.factories import create_api_key, create_org, register, unique_email

TENANT_TABLES = ("invitations", "api_keys", "audit_logs")


@pytest.mark.services
@pytest.mark.postgresql_only(NO_RLS)
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


@pytest.mark.services
@pytest.mark.postgresql_only(NO_RLS)
async def test_the_organization_flows_work_as_the_app_role_under_rls(build_app) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import client_for
    from tests.factories import add_member, api_key_headers

    app: FastAPI = await build_app(database_app_role="tenantry_app", rate_limit_enabled=False)
    async with client_for(app) as http:
        org = await create_org(http, await register(http))
        member = await add_member(app, http, org, "member")
        changed = await http.patch(
            f"{org.path}/members/{member.id}", json={"role": "admin"}, headers=org.owner.headers
        )
        assert changed.status_code == 200
        invited = await http.post(
            f"{org.path}/invitations",
            json={"email": unique_email("rls"), "role": "viewer"},
            headers=member.headers,
        )
        assert invited.status_code == 201
        key = await create_api_key(http, org, ["audit:read"], by=member)
        log = await http.get(f"{org.path}/audit-logs", headers=api_key_headers(key))
        assert log.status_code == 200
        assert {e["action"] for e in log.json()["data"]} >= {
            "organization.created",
            "member.role_changed",
            "invitation.created",
            "api_key.created",
        }


def tenant_tables() -> list[str]:
    from tenantry.core.db import Base, TenantOwned
    from tenantry.models import import_all_models

    import_all_models()
    return sorted(
        mapper.class_.__table__.name
        for mapper in Base.registry.mappers
        if issubclass(mapper.class_, TenantOwned)
    )


def test_the_tenant_tables_are_known() -> None:
    assert set(TENANT_TABLES) <= set(tenant_tables())


@pytest.mark.services
@pytest.mark.postgresql_only(NO_RLS)
async def test_every_tenant_table_has_forced_row_level_security(app: FastAPI) -> None:
    async with app.state.database.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relkind = 'r' AND relname = ANY(:names)"
            ),
            {"names": tenant_tables()},
        )
        found = {name: (enabled, forced) for name, enabled, forced in rows}
    assert found == dict.fromkeys(tenant_tables(), (True, True))
