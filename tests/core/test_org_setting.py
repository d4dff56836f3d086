"""The RLS organization setting on pooled connections (PostgreSQL, as the app role).

`app.org_id` is set at session level and only sent when the pooled connection holds
another value (core/db.py). These tests pin the pool to ONE connection, so every
request and session below reuses it, and check what row-level security sees after each
kind of use: another organization, a rollback, an error, an unbound session, a raw
connection, the `all_tenants` bypass.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from bench.pgcount import CountingProxy
from fastapi import FastAPI
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import DBAPIError

from tenantry.app import create_app
from tenantry.core.db import Database
from tenantry.core.hotreads import HotRead, fetch_one
from tenantry.core.rls import APP_ROLE
from tenantry.core.tenancy import ALL_TENANTS, TenantContext, bind_tenant, scoped_select
from tenantry.modules.tasks.models import Task
from tests.conftest import client_for
from tests.tenant_helpers import Org, Tenants

pytestmark = [
    pytest.mark.services,
    pytest.mark.postgresql_only(
        "app.org_id is the setting row-level security reads; MariaDB has neither (the hot"
        " read's statement count there: tests/core/test_hotreads.py)"
    ),
]

ONE_CONNECTION = {
    "database_app_role": APP_ROLE,
    "database_pool_size": 1,
    "database_max_overflow": 0,
    "rate_limit_enabled": False,
}
SETTING = text("SELECT current_setting('app.org_id', true)")
VISIBLE_TASKS = text("SELECT organization_id FROM tasks")


@pytest.fixture
async def pinned(build_app: Callable[..., Any]) -> AsyncIterator[Tenants]:
    app: FastAPI = await build_app(**ONE_CONNECTION)
    async with client_for(app) as http:
        yield Tenants(app, http)


async def _org_with_task(tenants: Tenants) -> tuple[Org, str]:
    org = await tenants.org()
    project = await org.project()
    task = await org.task(project)
    return org, f"/projects/{project['id']}/tasks/{task['id']}"


async def _get(org: Org, path: str, as_: Org | None = None) -> httpx.Response:
    return await org.tenants.client.get(org.url(path), headers=(as_ or org).owner.headers)


async def _seen_by_unbound_session(database: Database) -> tuple[Any, set[uuid.UUID]]:
    async with database.transaction() as session:
        setting = await session.scalar(SETTING)
        visible = set(await session.scalars(VISIBLE_TASKS))
    return setting, visible


async def _seen_by(database: Database, org: Org) -> tuple[Any, set[uuid.UUID]]:
    async with database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org.id))
        setting = await session.scalar(SETTING)
        visible = set(await session.scalars(VISIBLE_TASKS))
    return setting, visible


async def test_one_connection_serves_two_organizations_alternately(pinned: Tenants) -> None:
    (a, a_task), (b, b_task) = await _org_with_task(pinned), await _org_with_task(pinned)
    for _ in range(3):
        for org, path in ((a, a_task), (b, b_task)):
            response = await _get(org, path)
            assert response.status_code == 200, response.text
            assert response.json()["data"]["organizationId"] == str(org.id)
        # The other organization's task, asked through one's own organization: 404.
        assert (await _get(a, b_task.replace(str(b.id), str(a.id)))).status_code == 404
        assert (await _get(b, a_task)).status_code == 404  # not a member of a


async def test_an_unbound_session_after_a_tenant_read_sees_no_tenant_rows(
    pinned: Tenants,
) -> None:
    org, path = await _org_with_task(pinned)
    database: Database = pinned.app.state.database
    assert (await _get(org, path)).status_code == 200  # the connection now holds org
    setting, visible = await _seen_by_unbound_session(database)
    assert setting in ("", None)
    assert visible == set()
    assert (await _get(org, path)).status_code == 200  # and serves org again afterwards


async def test_a_raw_connection_after_a_tenant_read_runs_with_no_organization(
    pinned: Tenants,
) -> None:
    org, path = await _org_with_task(pinned)
    database: Database = pinned.app.state.database
    assert (await _get(org, path)).status_code == 200
    async with database.engine.connect() as conn:  # no session, nobody claims it
        assert (await conn.execute(SETTING)).scalar() in ("", None)
        assert list(await conn.execute(VISIBLE_TASKS)) == []


async def test_a_rolled_back_switch_is_not_taken_for_the_connections_setting(
    pinned: Tenants,
) -> None:
    (a, a_task), (b, _) = await _org_with_task(pinned), await _org_with_task(pinned)
    database: Database = pinned.app.state.database
    assert (await _get(a, a_task)).status_code == 200  # committed: the connection holds a
    async with database.session() as session:
        bind_tenant(session, TenantContext(organization_id=b.id))
        assert await session.scalar(SETTING) == str(b.id)
        await session.rollback()  # PostgreSQL reverts the session-level setting to a
    # Had the pool kept "b" as the connection's value, this session would skip the
    # set_config and row-level security would show it a's rows.
    setting, visible = await _seen_by(database, b)
    assert setting == str(b.id)
    assert visible == {b.id}
    assert (await _get(a, a_task)).status_code == 200


async def test_an_error_inside_the_transaction_leaves_no_wrong_setting(pinned: Tenants) -> None:
    (a, a_task), (b, b_task) = await _org_with_task(pinned), await _org_with_task(pinned)
    database: Database = pinned.app.state.database
    assert (await _get(a, a_task)).status_code == 200
    async with database.session() as session:
        bind_tenant(session, TenantContext(organization_id=b.id))
        with pytest.raises(DBAPIError):
            await session.execute(text("SELECT 1 / 0"))  # the transaction is aborted
        await session.rollback()
    setting, visible = await _seen_by(database, b)
    assert (setting, visible) == (str(b.id), {b.id})
    setting, visible = await _seen_by_unbound_session(database)
    assert (setting, visible) == ("", set())
    response = await _get(b, b_task)
    assert response.status_code == 200
    assert response.json()["data"]["organizationId"] == str(b.id)


async def test_the_all_tenants_bypass_ends_with_its_transaction(pinned: Tenants) -> None:
    (a, a_task), (b, _) = await _org_with_task(pinned), await _org_with_task(pinned)
    database: Database = pinned.app.state.database
    async with database.transaction() as session:
        across = await session.scalars(
            select(Task.organization_id).execution_options(**{ALL_TENANTS: True})
        )
        assert {a.id, b.id} <= set(across)
    async with database.engine.connect() as conn:
        flag = await conn.execute(text("SELECT current_setting('app.all_tenants', true)"))
        assert flag.scalar() in ("", "off", None)
        assert list(await conn.execute(VISIBLE_TASKS)) == []
    assert (await _seen_by(database, b))[1] == {b.id}
    assert (await _get(a, a_task)).status_code == 200


async def test_a_repeated_get_by_id_is_one_statement(
    make_settings: Callable[..., Any], database_url: str
) -> None:
    """No BEGIN/COMMIT, no set_config when the connection already holds the organization."""
    parts = urlsplit(database_url)
    proxy = CountingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = proxy.start()
    try:
        proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
        app = create_app(make_settings(database_url=proxied, **ONE_CONNECTION))
        async with app.router.lifespan_context(app), client_for(app) as http:
            tenants = Tenants(app, http)
            org, task_path = await _org_with_task(tenants)
            project_path = task_path.split("/tasks/")[0]
            for path in (task_path, project_path):
                assert (await _get(org, path)).status_code == 200  # warm: setting, prepare
                before = proxy.counts()
                response = await _get(org, path)
                spent = proxy.counts() - before
                assert response.status_code == 200
                assert spent.statements == 1, (path, spent)
    finally:
        proxy.stop()  # after the app closed its connections through it


async def test_a_failing_hot_read_raises_sqlalchemys_error_and_the_connection_serves_on(
    pinned: Tenants,
) -> None:
    """Driver errors of the raw path reach core/errors.py as on the ORM path (503s etc.)."""
    org, path = await _org_with_task(pinned)
    database: Database = pinned.app.state.database
    tasks = Task.__table__
    failing = HotRead(scoped_select(Task, where=(tasks.c.version / bindparam("zero") > 0,)))
    async with database.session(write=False) as session:
        bind_tenant(session, TenantContext(organization_id=org.id))
        with pytest.raises(DBAPIError) as raised:
            await fetch_one(session, failing, zero=0)
    assert getattr(raised.value.orig, "sqlstate", None) == "22012"  # division by zero
    response = await _get(org, path)
    assert response.status_code == 200
    assert response.json()["data"]["organizationId"] == str(org.id)
