"""Task listings: per project and across the organization's projects."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ColumnElement, Select, all_, any_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.counts import cached_total
from tenantry.core.listing import (
    Listing,
    SortKey,
    created_at_key,
    like_pattern,
    list_rows,
    search_condition,
    updated_at_key,
)
from tenantry.core.tenancy import INCLUDE_DELETED, TenantContext
from tenantry.core.trash import require_trash_access
from tenantry.modules.projects.models import Project
from tenantry.modules.tasks.models import Task
from tenantry.modules.tasks.schemas import OrgTaskListQuery, TaskListQuery

SORT_KEYS = (
    created_at_key(Task.created_at),
    updated_at_key(Task.updated_at),
    SortKey("title", Task.title),
    SortKey("dueDate", Task.due_date, dt.date.fromisoformat, nullable=True),
)


async def list_project_tasks(
    session: AsyncSession, project: Project, query: TaskListQuery, context: TenantContext
) -> Listing[Task]:
    statement = select(Task).where(Task.project_id == project.id)
    return await _list(session, _filtered(statement, query, context), query)


async def list_organization_tasks(
    session: AsyncSession, query: OrgTaskListQuery, context: TenantContext
) -> Listing[Task]:
    dialect = session.get_bind().dialect.name
    statement = select(Task).where(in_live_project(dialect, context.organization_id))
    if query.project_id is not None:
        statement = statement.where(Task.project_id == query.project_id)
    return await _list(session, _filtered(statement, query, context), query)


_TRASHED_PROJECTS = Project.__table__.alias("trashed_projects")


def in_live_project(dialect: str, organization_id: uuid.UUID) -> ColumnElement[bool]:
    """Tasks of a project in the trash are hidden with it — in the page's own statement.

    On PostgreSQL `project_id <> ALL (ARRAY(SELECT id FROM trash))`: the trash (a few
    rows, `ix_projects_trash`) is read once as an InitPlan and each row is checked against
    it while the sort index is walked. Not a join nor `NOT IN`/`NOT EXISTS`: with those
    PostgreSQL misjudges how many rows match (the RLS policy and the organization filter
    look independent to it, `NOT IN` is guessed at half) and sorts all 200,000 rows of a
    big organization for a deep offset or search page instead of walking the index
    (docs/performance.md: 390 ms against 7 ms at page 500). SQLite plans `NOT IN` well.

    The subquery reads the table, not the `Project` entity: the session's soft-delete
    criteria would otherwise add `deleted_at IS NULL` to it and empty it — so it names
    the organization itself (the tenant criteria are the entity's too): the trash index
    leads with it, and without row-level security (SQLite, MariaDB) the subquery would
    otherwise read every organization's trashed projects. It can only exclude tasks
    (never add any), and RLS applies to it as to any read.
    """
    trashed = select(_TRASHED_PROJECTS.c.id).where(
        _TRASHED_PROJECTS.c.organization_id == organization_id,
        _TRASHED_PROJECTS.c.deleted_at.is_not(None),
    )
    if dialect == "postgresql":
        return Task.project_id != all_(func.array(trashed.scalar_subquery()))
    return Task.project_id.not_in(trashed)


async def trashed_project_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Ids of the organization's soft-deleted projects (`ix_projects_trash`, index only)."""
    rows = await session.scalars(
        select(Project.id)
        .where(Project.deleted_at.is_not(None))
        .execution_options(**{INCLUDE_DELETED: True})
    )
    return list(rows)


def _filtered(
    statement: Select[Task], query: TaskListQuery, context: TenantContext
) -> Select[Task]:
    if query.deleted == "only":
        own_only = require_trash_access(context, "tasks:delete")
        statement = statement.where(Task.deleted_at.is_not(None)).execution_options(
            **{INCLUDE_DELETED: True}
        )
        if own_only:
            statement = statement.where(Task.created_by == context.actor_id)
    if query.status is not None:
        statement = statement.where(Task.status == query.status.value)
    if query.assignee_id is not None:
        statement = statement.where(Task.assignee_id == query.assignee_id)
    if query.due_before is not None:
        statement = statement.where(Task.due_date < query.due_before)
    return statement


async def _list(
    session: AsyncSession, statement: Select[Task], query: TaskListQuery
) -> Listing[Task]:
    """The page, the search narrowed through the trigram index when it pays (PostgreSQL).

    A term with few matches (at most `search_count_cap`) becomes the exact list of their
    ids, found through `ix_tasks_search` by `tenantry_task_search`: the page and its
    count then read only those rows, instead of every task of the organization. A term
    with more matches keeps the plain `ILIKE`: walking the sort index finds a page of
    them after a few rows, and the count stops at the cap. SQLite always scans (`LIKE`).
    """
    narrowed = None
    if query.search and session.get_bind().dialect.name == "postgresql":
        narrowed = await _search_ids(session, query.search, query.search_count_cap + 1)
    if narrowed is not None:
        statement = statement.where(Task.id == any_(bindparam("search_ids", narrowed)))
    else:
        statement = statement.where(*search_condition(query.search, Task.title, Task.description))
    return await list_rows(
        session,
        statement,
        keys=SORT_KEYS,
        id_column=Task.id,
        query=query,
        search_by_index=narrowed is not None,
    )


async def _search_ids(session: AsyncSession, term: str, limit: int) -> list[uuid.UUID] | None:
    """The ids of every task matching `term`, or None when there are `limit` or more.

    How many there are (up to `limit`) is cached like a total (core/counts.py): a common
    term costs one cache read per page, not a function call returning `limit` ids.
    """
    # Revision 0016's SECURITY DEFINER function (docs/tenancy.md, "Search under RLS").
    found = select(func.tenantry_task_search(like_pattern(term), limit).table_valued("id"))
    ids: list[uuid.UUID] | None = None

    async def count() -> int:
        nonlocal ids
        ids = list(await session.scalars(found))
        return len(ids)

    if await cached_total(session, found, count) >= limit:
        return None
    return ids if ids is not None else list(await session.scalars(found))
