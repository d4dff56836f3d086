"""Print the PostgreSQL or MariaDB query plans of the tenant-resource list/get paths.

    uv run python -m bench.plans --organization-id <id printed by bench.seed> \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/tenantry_bench
    uv run python -m bench.plans --organization-id <id> \\
        --database-url mariadb+asyncmy://root@127.0.0.1:3306/tenantry_plans

Runs the real service functions (the same SQL the API sends) on a session bound to the
organization, as the application role on PostgreSQL (`tenantry_app`, so row-level
security is part of the plan), captures every SELECT they issue and prints `EXPLAIN
(ANALYZE, BUFFERS)` of each; on MariaDB (no row-level security, no application role)
`ANALYZE` of each (the optimizer's plan with the rows each step really read, `r_rows`)
and the statement's best time of 3. Used to write docs/performance.md; rerun it after
changing a query or an index.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import load_settings
from tenantry.core.db import Database
from tenantry.core.permissions import role_permissions
from tenantry.core.rls import APP_ROLE
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.projects import service as projects
from tenantry.modules.projects.models import Project
from tenantry.modules.projects.schemas import ProjectListQuery
from tenantry.modules.tasks import queries as tasks
from tenantry.modules.tasks.models import Task
from tenantry.modules.tasks.schemas import OrgTaskListQuery, TaskListQuery

Scenario = Callable[[AsyncSession, TenantContext], Awaitable[Any]]


async def _sample(session: AsyncSession) -> tuple[Project, Task, uuid.UUID]:
    project = (await session.scalars(select(Project).limit(1))).one()
    task = (await session.scalars(select(Task).where(Task.assignee_id.is_not(None)).limit(1))).one()
    assert task.assignee_id is not None
    return project, task, task.assignee_id


async def _deep_cursor(session: AsyncSession, ctx: TenantContext) -> str:
    """A cursor 150,000 rows deep (walked with a big page, like a client would)."""
    listing = await tasks.list_organization_tasks(
        session, OrgTaskListQuery(cursor="", limit=100), ctx
    )
    cursor = listing.next_cursor or ""
    for _ in range(1500 - 1):
        listing = await tasks.list_organization_tasks(
            session, OrgTaskListQuery(cursor=cursor, limit=100), ctx
        )
        cursor = listing.next_cursor or ""
    return cursor


def scenarios(project: Project, task: Task, assignee: uuid.UUID, deep: str) -> dict[str, Scenario]:
    def org_tasks(**params: Any) -> Scenario:
        return lambda s, c: tasks.list_organization_tasks(s, OrgTaskListQuery(**params), c)

    return {
        "projects: list (createdAt desc, offset page 1)": lambda s, c: projects.list_projects(
            s, ProjectListQuery(), c
        ),
        "projects: get by id": lambda s, c: projects.get_project(s, project.id),
        "tasks: get by id": lambda s, c: s.get(Task, task.id),
        "tasks: list across projects (offset page 1)": org_tasks(),
        "tasks: list across projects (offset page 100)": org_tasks(page=100),
        "tasks: first cursor page": org_tasks(cursor=""),
        "tasks: cursor page 150,000 rows deep": org_tasks(cursor=deep),
        "tasks: one project's tasks": lambda s, c: tasks.list_project_tasks(
            s, project, TaskListQuery(), c
        ),
        "tasks: filter status=done": org_tasks(status="done"),
        "tasks: filter assigneeId": org_tasks(assignee_id=assignee),
        "tasks: dueBefore, sorted by dueDate asc (cursor)": org_tasks(
            due_before=dt.date.today(), sort_by="dueDate", sort_order="asc", cursor=""
        ),
        "tasks: sort by title asc (cursor)": org_tasks(
            sort_by="title", sort_order="asc", cursor=""
        ),
        "tasks: search 'billing' (cursor)": org_tasks(search="billing", cursor=""),
        "tasks: search '#12345' (rare term, cursor)": org_tasks(search="#12345", cursor=""),
        "tasks: trash (deleted=only)": org_tasks(deleted="only"),
    }


MARIADB_PLAN_COLUMNS = ("table", "type", "key", "rows", "r_rows", "filtered", "Extra")


async def _plan(connection: Any, statement: str, parameters: Any) -> str:
    """The plan of `statement` as the database ran it (EXPLAIN ANALYZE / MariaDB ANALYZE)."""
    if connection.dialect.name != "mariadb":
        result = await connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters
        )
        return "\n".join(row[0] for row in result)
    result = await connection.exec_driver_sql("ANALYZE " + statement, parameters)
    names = list(result.keys())
    lines = [" | ".join(MARIADB_PLAN_COLUMNS)]
    for row in result:
        found = dict(zip(names, row, strict=True))
        lines.append(" | ".join(str(found.get(c)) for c in MARIADB_PLAN_COLUMNS))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        await connection.exec_driver_sql(statement, parameters)
        timings.append(time.perf_counter() - started)
    lines.append(f"best of 3: {min(timings) * 1000:.2f} ms")
    return "\n".join(lines)


async def explain_all(url: str, organization_id: uuid.UUID, app_role: str) -> str:
    mariadb = url.startswith(("mariadb", "mysql"))
    settings = load_settings(
        _env_file=None,
        env="development",
        database_url=url,
        database_app_role=None if mariadb else app_role,
    )
    database = Database(settings)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "set_config" not in statement:
            captured.append((statement, parameters))

    out: list[str] = []
    context = TenantContext(organization_id=organization_id, permissions=role_permissions("owner"))
    async with database.session() as session:
        bind_tenant(session, context)
        project, task, assignee = await _sample(session)
        deep = await _deep_cursor(session, context)
        for title, scenario in scenarios(project, task, assignee, deep).items():
            session.expunge_all()
            captured.clear()
            event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
            try:
                await scenario(session, context)
            finally:
                event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
            out.append(f"### {title}\n")
            for statement, parameters in captured:
                plan = await _plan(await session.connection(), statement, parameters)
                out.append(f"```sql\n{statement.strip()}\n```\n```\n{plan}\n```\n")
        await session.rollback()
    await database.dispose()
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--organization-id", required=True, type=uuid.UUID)
    parser.add_argument("--app-role", default=APP_ROLE)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    report = asyncio.run(explain_all(args.database_url, args.organization_id, args.app_role))
    if args.output:
        args.output.write_text(report)
    else:
        print(report)


if __name__ == "__main__":
    main()
