"""Tasks endpoints (API.md, "Tenant resources"): HTTP only, rules in the service.

`router` serves the tasks of one project; `org_router` the organization-wide search and
the bulk update.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from tenantry.core.authz import require
from tenantry.core.concurrency import Expectation, IfMatchHeader, set_etag
from tenantry.core.hotreads import envelope_response, model_response
from tenantry.core.idempotency import IdempotencyDep
from tenantry.core.responses import CursorPage, Envelope, Page, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.projects.deps import ProjectDep, ProjectId
from tenantry.modules.tasks import bulk, queries, service
from tenantry.modules.tasks.deps import DeletedTaskDep, TaskDep, TaskId
from tenantry.modules.tasks.schemas import (
    BulkResult,
    BulkUpdate,
    OrgTaskListQuery,
    TaskCreate,
    TaskListQuery,
    TaskOut,
    TaskUpdate,
)

router = APIRouter(
    prefix="/orgs/{orgId}/projects/{projectId}/tasks", tags=["tasks"], route_class=UnitOfWorkRoute
)
org_router = APIRouter(prefix="/orgs/{orgId}/tasks", tags=["tasks"], route_class=UnitOfWorkRoute)

CanRead = Annotated[TenantContext, Depends(require("tasks:read"))]
CanWrite = Annotated[TenantContext, Depends(require("tasks:write"))]
CanDelete = Annotated[TenantContext, Depends(require("tasks:delete"))]
TaskPage = Page[TaskOut] | CursorPage[TaskOut]


@org_router.get("", response_model=TaskPage)
async def search_tasks(
    ctx: CanRead, query: Annotated[OrgTaskListQuery, Query()], session: SessionDep
) -> Response:
    """Tasks across projects (status, assigneeId, projectId, dueBefore, search)."""
    listing = await queries.list_organization_tasks(session, query, ctx)
    return model_response(listing.as_page(TaskOut))


@org_router.patch("/bulk")
async def bulk_update_tasks(
    body: BulkUpdate, ctx: CanWrite, session: SessionDep
) -> Envelope[BulkResult]:
    """Apply one change to up to 100 tasks; each is authorized and reported on its own."""
    return ok(await bulk.bulk_update(session, ctx, body))


@router.get("", response_model=TaskPage)
async def list_tasks(
    ctx: CanRead,
    project: ProjectDep,
    query: Annotated[TaskListQuery, Query()],
    session: SessionDep,
) -> Response:
    """The project's tasks (status, assigneeId, dueBefore, search; sort; offset or cursor)."""
    listing = await queries.list_project_tasks(session, project, query, ctx)
    return model_response(listing.as_page(TaskOut))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Envelope[TaskOut])
async def create_task(
    body: TaskCreate,
    _ctx: CanWrite,
    project: ProjectDep,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Create a task in the project (honours `Idempotency-Key`)."""

    async def create() -> Envelope[TaskOut]:
        return ok(TaskOut.model_validate(await service.create_task(session, project, body)))

    return await idempotency.respond(status.HTTP_201_CREATED, create)


@router.get("/{taskId}", response_model=Envelope[TaskOut])
async def get_task(
    _ctx: CanRead, project_id: ProjectId, task_id: TaskId, session: SessionDep
) -> Response:
    """One task, with its version as `ETag`."""
    row = await service.read_task(session, project_id, task_id)
    return envelope_response(TaskOut, row, version=row["version"])


@router.patch("/{taskId}")
async def update_task(
    body: TaskUpdate,
    ctx: CanWrite,
    task: TaskDep,
    session: SessionDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Envelope[TaskOut]:
    """Change a task (status moves validated; `If-Match` → 412, stale `version` → 409)."""
    expectation = Expectation(if_match, body.version)
    updated = await service.update_task(session, ctx, task, body, expectation)
    set_etag(response, updated.version)
    return ok(TaskOut.model_validate(updated))


@router.delete("/{taskId}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_task(ctx: CanDelete, task: TaskDep, session: SessionDep) -> None:
    """Soft-delete a task (`tasks:delete:own` holders: only tasks they created)."""
    await service.delete_task(session, ctx, task)


@router.post("/{taskId}/restore")
async def restore_task(
    ctx: CanDelete, task: DeletedTaskDep, session: SessionDep, response: Response
) -> Envelope[TaskOut]:
    """Bring a soft-deleted task back."""
    restored = await service.restore_task(session, ctx, task)
    set_etag(response, restored.version)
    return ok(TaskOut.model_validate(restored))
