"""Task listings: per project and across the organization's projects."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.listing import (
    SortKey,
    created_at_key,
    keyset_page,
    offset_page,
    search_condition,
    sort_key,
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


def project_tasks(project: Project) -> Select[Task]:
    return select(Task).where(Task.project_id == project.id)


def organization_tasks(query: OrgTaskListQuery) -> Select[Task]:
    # The join drops tasks of soft-deleted projects: the scoping adds `deleted_at IS NULL`
    # (and the organization) to `projects` too.
    statement = select(Task).join(Project, Project.id == Task.project_id)
    if query.project_id is not None:
        statement = statement.where(Task.project_id == query.project_id)
    return statement


def filtered(statement: Select[Task], query: TaskListQuery, context: TenantContext) -> Select[Task]:
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
    return statement.where(*search_condition(query.search, Task.title, Task.description))


async def list_tasks(
    session: AsyncSession, statement: Select[Task], query: TaskListQuery
) -> tuple[list[Task], int]:
    return await offset_page(session, statement, offset=query.offset, **_paging(query))


async def list_tasks_after(
    session: AsyncSession, statement: Select[Task], query: TaskListQuery
) -> tuple[list[Task], str | None]:
    return await keyset_page(session, statement, cursor=query.cursor or "", **_paging(query))


def _paging(query: TaskListQuery) -> dict[str, Any]:
    return {
        "key": sort_key(SORT_KEYS, query.sort_by),
        "id_column": Task.id,
        "descending": query.sort_order == "desc",
        "limit": query.limit,
    }
