"""MariaDB: a list page reads a page of index entries, a count reads an index alone.

Revision 0020's indexes `(organization_id, deleted_at, ...)` and the listing's `FORCE
INDEX FOR ORDER BY` (core/listing.py) are what make the plans below; without either, a
deep cursor page walks every entry before it and a count reads every row
(docs/performance.md, "MariaDB"). Checked with `ANALYZE FORMAT=JSON` (what the statement
really read) of the SQL the service functions send, on an organization of a few thousand
tasks with fresh statistics (`ANALYZE TABLE`). Runs under `make test-mariadb` only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from bench.seed import mariadb_value, seed_organization
from sqlalchemy import event

from tenantry.core.db import Database
from tenantry.core.permissions import role_permissions
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.tasks import queries
from tenantry.modules.tasks.schemas import OrgTaskListQuery
from tests.tenant_helpers import Tenants

TASKS = 3_000
PAGE = 50
DEPTH_PAGES = 40  # the captured page starts 2,000 live rows deep


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "table_name" in plan:
            yield plan
        for value in plan.values():
            yield from _nodes(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _nodes(value)


async def _seed(database: Database) -> uuid.UUID:
    async with database.engine.begin() as connection:

        async def sink(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
            marks = ", ".join("%s" for _ in columns)
            await connection.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [tuple(mariadb_value(v) for v in row) for row in rows],
            )

        seeded = await seed_organization(sink, users=5, projects=20, tasks=TASKS, seed=7)
        await connection.exec_driver_sql("ANALYZE TABLE projects, tasks")
    return uuid.UUID(seeded.organization_id)


async def _tasks_plan(session: Any, statement: str, parameters: Any) -> dict[str, Any]:
    connection = await session.connection()
    result = await connection.exec_driver_sql("ANALYZE FORMAT=JSON " + statement, parameters)
    plan = json.loads(result.scalar_one())
    (tasks,) = [node for node in _nodes(plan) if node["table_name"] == "tasks"]
    return tasks


async def test_deep_cursor_pages_and_counts_read_the_list_indexes(tenants: Tenants) -> None:
    database: Database = tenants.app.state.database
    if database.engine.dialect.name != "mariadb":
        pytest.skip("MariaDB's plans (PostgreSQL: docs/performance.md, bench/plans.py)")
    organization_id = await _seed(database)
    context = TenantContext(organization_id=organization_id, permissions=role_permissions("owner"))
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    async with database.session() as session:
        bind_tenant(session, context)
        cursor = ""
        for _ in range(DEPTH_PAGES):
            listing = await queries.list_organization_tasks(
                session, OrgTaskListQuery(cursor=cursor, limit=PAGE), context
            )
            cursor = listing.next_cursor or ""
        assert cursor, "the organization has fewer live tasks than the depth"
        event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
        try:
            await queries.list_organization_tasks(
                session, OrgTaskListQuery(cursor=cursor, limit=PAGE), context
            )
            (page,) = captured
            captured.clear()
            await queries.list_organization_tasks(session, OrgTaskListQuery(status="done"), context)
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
        counts = [c for c in captured if "count(" in c[0].lower()]
        assert len(counts) == 1, captured

        deep = await _tasks_plan(session, *page)
        # The range starts at the cursor: a page of entries read, not the 2,000 before it.
        assert deep["access_type"] == "range", deep
        assert deep["key"] == "ix_tasks_md_created_at_id", deep
        assert deep["r_rows"] <= 2 * PAGE, deep

        count = await _tasks_plan(session, *counts[0])
        # `deleted_at`, `status` and `project_id` (the trash filter) are all in the index.
        assert count["key"].startswith("ix_tasks_md_"), count
        assert count.get("using_index") is True, count
        await session.rollback()
