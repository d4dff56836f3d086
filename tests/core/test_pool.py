"""The connection pool replaces connections the server closed (no pre-ping round trip)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.tenant_helpers import Tenants


@pytest.mark.services
async def test_a_request_after_the_server_closed_every_pooled_connection_succeeds(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    for _ in range(3):  # a few pooled connections in use and returned
        response = await tenants.client.get(org.url("/projects"), headers=org.owner.headers)
        assert response.status_code == 200
    url = tenants.app.state.settings.database_url.replace("postgresql+asyncpg", "postgresql")
    admin = await asyncpg.connect(url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'tenantry'"
        )
    finally:
        await admin.close()
    assert killed >= 1
    await asyncio.sleep(0.2)  # the event loop sees the sockets close
    response = await tenants.client.get(org.url("/projects"), headers=org.owner.headers)
    assert response.status_code == 200, response.text
