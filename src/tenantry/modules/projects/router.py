"""Projects endpoints (API.md, "Tenant resources"): HTTP only, rules in the service."""

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
from tenantry.modules.plans.enforce import limit
from tenantry.modules.projects import service
from tenantry.modules.projects.deps import DeletedProjectDep, ProjectDep, ProjectId
from tenantry.modules.projects.schemas import (
    ProjectCreate,
    ProjectListQuery,
    ProjectOut,
    ProjectUpdate,
)

router = APIRouter(prefix="/orgs/{orgId}/projects", tags=["projects"], route_class=UnitOfWorkRoute)

CanRead = Annotated[TenantContext, Depends(require("projects:read"))]
CanWrite = Annotated[TenantContext, Depends(require("projects:write"))]
CanDelete = Annotated[TenantContext, Depends(require("projects:delete"))]


@router.get("", response_model=Page[ProjectOut] | CursorPage[ProjectOut])
async def list_projects(
    ctx: CanRead, query: Annotated[ProjectListQuery, Query()], session: SessionDep
) -> Response:
    """The organization's projects (status, search; sort; offset or cursor pages)."""
    listing = await service.list_projects(session, query, ctx)
    return model_response(listing.as_page(ProjectOut))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Envelope[ProjectOut],
    dependencies=[Depends(limit("projects"))],
)
async def create_project(
    body: ProjectCreate, _ctx: CanWrite, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """Create a project (honours `Idempotency-Key`)."""

    async def create() -> Envelope[ProjectOut]:
        return ok(ProjectOut.model_validate(await service.create_project(session, body)))

    return await idempotency.respond(status.HTTP_201_CREATED, create)


@router.get("/{projectId}", response_model=Envelope[ProjectOut])
async def get_project(_ctx: CanRead, project_id: ProjectId, session: SessionDep) -> Response:
    """One project, with its version as `ETag`."""
    row = await service.read_project(session, project_id)
    return envelope_response(ProjectOut, row, version=row["version"])


@router.patch("/{projectId}")
async def update_project(
    body: ProjectUpdate,
    _ctx: CanWrite,
    project: ProjectDep,
    session: SessionDep,
    response: Response,
    if_match: IfMatchHeader = None,
) -> Envelope[ProjectOut]:
    """Change a project (`If-Match` → 412 when stale; `version` → 409 when stale)."""
    expectation = Expectation(if_match, body.version)
    updated = await service.update_project(session, project, body, expectation)
    set_etag(response, updated.version)
    return ok(ProjectOut.model_validate(updated))


@router.delete("/{projectId}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_project(_ctx: CanDelete, project: ProjectDep, session: SessionDep) -> None:
    """Soft-delete a project (its tasks disappear with it until it is restored)."""
    await service.delete_project(session, project)


@router.post("/{projectId}/restore")
async def restore_project(
    _ctx: CanDelete, project: DeletedProjectDep, session: SessionDep, response: Response
) -> Envelope[ProjectOut]:
    """Bring a soft-deleted project back."""
    restored = await service.restore_project(session, project)
    set_etag(response, restored.version)
    return ok(ProjectOut.model_validate(restored))
