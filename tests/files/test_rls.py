"""Files under PostgreSQL row-level security, as the application role (make test-services)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tenantry.core.rls import APP_ROLE
from tests.conftest import DATABASE_PER_TENANT, NO_RLS, client_for
from tests.files.conftest import make_tenant, start_files_app
from tests.files.samples import PNG, TEXT
from tests.files.test_upload_download import upload

pytestmark = [
    pytest.mark.services,
    pytest.mark.postgresql_only(NO_RLS),
    # Raw SQL on the control engine under `app.org_id`: with TENANCY_MODE=database the files
    # are in each organization's own database; tests/orgs/test_isolation.py walks the API.
    pytest.mark.skipif(DATABASE_PER_TENANT, reason="row-level security is the shared mode's"),
]


async def test_files_work_as_the_app_role_and_raw_sql_sees_one_organization(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(rate_limit_enabled=False, database_app_role=APP_ROLE)
    async for app in start_files_app(settings):
        async with client_for(app) as http:
            a, b = await make_tenant(app, http), await make_tenant(app, http)
            for org, data in ((a, PNG), (b, TEXT), (b, TEXT)):
                assert (await upload(http, org.files, org.owner, data)).status_code == 201
            listed = await http.get(b.files, headers=b.owner)
            file_id = listed.json()["data"][0]["id"]
            deleted = await http.delete(f"{b.files}/{file_id}", headers=b.owner)
            assert deleted.status_code == 204
            assert await b.usage() == (len(TEXT), 1)

            async with app.state.database.engine.begin() as conn:
                await conn.execute(
                    text("SELECT set_config('app.org_id', :org, true)"), {"org": b.id}
                )
                for table in ("files", "storage_usage"):
                    rows = await conn.execute(text(f"SELECT DISTINCT organization_id FROM {table}"))
                    assert {str(r[0]) for r in rows} == {b.id}, table
                foreign = await conn.execute(
                    text("UPDATE storage_usage SET bytes_used = 0 WHERE organization_id = :a"),
                    {"a": uuid.UUID(a.id)},
                )
                assert foreign.rowcount == 0
            assert await a.usage() == (len(PNG), 1)
