"""`PATCH /orgs/{orgId}/tasks/bulk`: one change applied to many tasks, each on its own.

Every id is loaded through the tenant scoping (another organization's task is simply
`not_found`), authorized on its own row (`tasks:write:own` holders only change their
own tasks), checked against the workflow, and written in its own savepoint — so one
failure never undoes the others, and the whole batch still commits in the request's
single transaction.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from tenantry.core.authz import authorize_row
from tenantry.core.errors import AppError, VersionConflict
from tenantry.core.tenancy import TenantContext
from tenantry.modules.projects.models import Project
from tenantry.modules.tasks.assignees import require_assignable
from tenantry.modules.tasks.models import Task
from tenantry.modules.tasks.schemas import BulkFailure, BulkResult, BulkUpdate
from tenantry.modules.tasks.service import apply_changes, audited, record_update


async def bulk_update(
    session: AsyncSession, context: TenantContext, body: BulkUpdate
) -> BulkResult:
    changes = body.changes.model_dump(exclude_unset=True)
    if "assignee_id" in changes:
        await require_assignable(session, changes["assignee_id"])
    ids = list(dict.fromkeys(body.ids))  # each id once, in the order given
    found = await _live_tasks(session, ids)
    updated: list[uuid.UUID] = []
    failed: list[BulkFailure] = []
    for task_id in ids:
        task = found.get(task_id)
        if task is None:
            failed.append(BulkFailure(id=task_id, code="not_found"))
            continue
        try:
            await _update_one(session, context, task, changes)
        except AppError as error:
            failed.append(BulkFailure(id=task_id, code=error.code))
        else:
            updated.append(task_id)
    return BulkResult(updated=updated, failed=failed)


async def _live_tasks(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Task]:
    rows = await session.scalars(
        select(Task).join(Project, Project.id == Task.project_id).where(Task.id.in_(ids))
    )
    return {task.id: task for task in rows}


async def _update_one(
    session: AsyncSession, context: TenantContext, task: Task, changes: dict[str, object]
) -> None:
    authorize_row(context, "tasks:write", task.created_by)
    before = audited(task)
    try:
        async with session.begin_nested():
            apply_changes(task, dict(changes))
            await session.flush()
            await record_update(session, task, before)
    except StaleDataError:
        raise VersionConflict() from None
