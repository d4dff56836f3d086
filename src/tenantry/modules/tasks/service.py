"""Task rules: the status workflow, assignees, `:own` permissions, soft delete.

The session is bound to the request's organization: no query here filters by
organization or `deleted_at` by hand (core/tenancy.py adds both, joins included).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.authz import authorize_row
from tenantry.core.concurrency import Expectation, flush_versioned
from tenantry.core.db import utcnow
from tenantry.core.errors import Conflict, NotFound
from tenantry.core.hotreads import HotRead, fetch_one
from tenantry.core.tenancy import INCLUDE_DELETED, TenantContext, scoped_select
from tenantry.modules.audit.service import created, diff, record, snapshot
from tenantry.modules.projects.models import Project
from tenantry.modules.projects.service import get_project
from tenantry.modules.tasks.assignees import require_assignable
from tenantry.modules.tasks.models import TRANSITIONS, Task, TaskStatus
from tenantry.modules.tasks.schemas import TaskChanges, TaskCreate, TaskUpdate

AUDITED_FIELDS = (
    "project_id", "title", "description", "status", "priority", "assignee_id", "due_date",
)  # fmt: skip


def audited(task: Task) -> dict[str, object]:
    return snapshot(task, AUDITED_FIELDS)


async def record_update(session: AsyncSession, task: Task, before: dict[str, object]) -> None:
    changes = diff(before, audited(task))
    if changes:  # nothing changed: no UPDATE was sent, the version stays, nothing to audit
        await record(session, "task.updated", "task", task.id, changes)


def check_transition(current: str, new: str) -> None:
    """409 `conflict` unless the workflow allows `current → new` (staying put is no move)."""
    if current == new:
        return
    allowed = TRANSITIONS[TaskStatus(current)]
    if TaskStatus(new) not in allowed:
        raise Conflict(
            f"A task cannot move from {current} to {new}",
            details=[
                {
                    "field": "status",
                    "message": f"Allowed from {current}: {', '.join(allowed)}",
                    "allowed": [status.value for status in allowed],
                }
            ],
        )


async def create_task(session: AsyncSession, project: Project, body: TaskCreate) -> Task:
    await require_assignable(session, body.assignee_id)
    task = Task(project_id=project.id, **body.model_dump())
    session.add(task)
    await session.flush()
    await record(session, "task.created", "task", task.id, created(audited(task)))
    return task


async def find_task(session: AsyncSession, project_id: uuid.UUID, task_id: uuid.UUID) -> Task:
    """The live task of a live project in one statement (the hot path of every task route).

    Only a miss asks about the project, to say which of the two is not there.
    """
    task = await session.scalar(
        select(Task)
        .join(Project, Project.id == Task.project_id)
        .where(Task.id == task_id, Task.project_id == project_id)
    )
    if task is None:
        await get_project(session, project_id)  # 404 "Project not found" when it is missing
        raise NotFound("Task not found")
    return task


_tasks = Task.__table__
_projects = Project.__table__
TASK_BY_ID = HotRead(
    scoped_select(
        Task,
        joins=((Project, _projects.c.id == _tasks.c.project_id),),
        where=(_tasks.c.id == bindparam("task_id"), _tasks.c.project_id == bindparam("project_id")),
    )
)


async def read_task(
    session: AsyncSession, project_id: uuid.UUID, task_id: uuid.UUID
) -> dict[str, Any]:
    """`find_task` for `GET .../tasks/{taskId}`: a row in one round trip, the same 404s."""
    row = await fetch_one(session, TASK_BY_ID, task_id=task_id, project_id=project_id)
    if row is None:
        await get_project(session, project_id)  # 404 "Project not found" when it is missing
        raise NotFound("Task not found")
    row["is_complete"] = row["status"] == TaskStatus.DONE
    return row


async def get_deleted_task(session: AsyncSession, project: Project, task_id: uuid.UUID) -> Task:
    task = await session.scalar(
        select(Task)
        .where(Task.id == task_id, Task.project_id == project.id, Task.deleted_at.is_not(None))
        .execution_options(**{INCLUDE_DELETED: True})
    )
    if task is None:
        raise NotFound("Task not found in the trash")
    return task


def apply_changes(task: Task, changes: dict[str, Any]) -> None:
    """Validate the workflow, then set the fields (assignees are checked by the caller)."""
    if "status" in changes:
        check_transition(task.status, changes["status"])
    for field, value in changes.items():
        setattr(task, field, value)


def _changes(body: TaskChanges) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True, exclude={"version"})


async def update_task(
    session: AsyncSession,
    context: TenantContext,
    task: Task,
    body: TaskUpdate,
    expectation: Expectation,
) -> Task:
    authorize_row(context, "tasks:write", task.created_by)
    expectation.check(task.version)
    changes = _changes(body)
    if "assignee_id" in changes:
        await require_assignable(session, changes["assignee_id"])
    before = audited(task)
    apply_changes(task, changes)
    await flush_versioned(session, expectation)
    await record_update(session, task, before)
    return task


async def delete_task(session: AsyncSession, context: TenantContext, task: Task) -> None:
    authorize_row(context, "tasks:delete", task.created_by)
    task.deleted_at = utcnow()
    await flush_versioned(session)
    changes = {"deleted_at": (None, task.deleted_at)}
    await record(session, "task.deleted", "task", task.id, changes)


async def restore_task(session: AsyncSession, context: TenantContext, task: Task) -> Task:
    authorize_row(context, "tasks:delete", task.created_by)
    changes = {"deleted_at": (task.deleted_at, None)}
    task.deleted_at = None
    await flush_versioned(session)
    await record(session, "task.restored", "task", task.id, changes)
    return task
