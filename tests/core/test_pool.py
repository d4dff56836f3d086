"""The connection pool replaces connections the server closed.

PostgreSQL: no pre-ping round trip, a checkout drops a connection asyncpg saw closed
(core/db.py). MariaDB: `pool_pre_ping` (asyncmy has no cheap "closed" flag)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.tenant_helpers import Tenants


async def _kill_every_app_connection(database_url: str) -> int:
    """Have the server close every connection to the test database but the killer's own."""
    if database_url.startswith("mariadb"):
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as admin:
                ids = list(
                    await admin.scalars(
                        text(
                            "SELECT ID FROM information_schema.PROCESSLIST"
                            " WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
                        )
                    )
                )
                for connection_id in ids:
                    await admin.execute(text(f"KILL CONNECTION {int(connection_id)}"))
        finally:
            await engine.dispose()
        return len(ids)
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'tenantry'"
        )
    finally:
        await admin.close()
    return killed


@pytest.mark.services
async def test_a_request_after_the_server_closed_every_pooled_connection_succeeds(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    for _ in range(3):  # a few pooled connections in use and returned
        response = await tenants.client.get(org.url("/projects"), headers=org.owner.headers)
        assert response.status_code == 200
    assert await _kill_every_app_connection(tenants.app.state.settings.database_url) >= 1
    await asyncio.sleep(0.2)  # the event loop sees the sockets close
    for _ in range(3):  # every pooled connection was closed: each one is replaced
        response = await tenants.client.get(org.url("/projects"), headers=org.owner.headers)
        assert response.status_code == 200, response.text
