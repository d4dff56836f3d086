"""Platform admin, database per tenant (mounted only in that mode): GET /admin/tenants;
POST /admin/orgs/{orgId}/backup | restore | move → 202 and a job (tasks.py)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, status

from tenantry.core.errors import NotFound, ValidationFailed
from tenantry.core.jobs import enqueue
from tenantry.core.responses import Envelope, JobAccepted, Page, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.modules.auth.deps import PlatformAdmin
from tenantry.modules.tenants import tasks
from tenantry.modules.tenants.schemas import (
    MoveRequest,
    RestoreRequest,
    TenantListQuery,
    TenantOut,
)
from tenantry.modules.tenants.service import TenantDatabases
from tenantry.services import services_of

router = APIRouter(prefix="/admin", tags=["platform administration"], route_class=UnitOfWorkRoute)


async def get_tenant_databases(request: Request) -> TenantDatabases:
    tenants = services_of(request).tenant_databases
    if tenants is None:  # the router is only mounted in database mode
        raise NotFound()
    return tenants


TenantDatabasesDep = Annotated[TenantDatabases, Depends(get_tenant_databases)]


@router.get("/tenants")
async def list_tenants(
    _admin: PlatformAdmin,
    session: SessionDep,
    tenants: TenantDatabasesDep,
    query: Annotated[TenantListQuery, Query()],
) -> Page[TenantOut]:
    """Every tenant database: organization, server, database, schema revision, size."""
    rows, total = await tenants.list_tenants(session, offset=query.offset, limit=query.limit)
    items = [TenantOut.model_validate(row, from_attributes=True) for row in rows]
    return page(items, total=total, page=query.page, limit=query.limit)


OrgId = Annotated[uuid.UUID, Path(alias="orgId")]


@router.post("/orgs/{orgId}/backup", status_code=status.HTTP_202_ACCEPTED)
async def back_up(
    admin: PlatformAdmin, session: SessionDep, tenants: TenantDatabasesDep, org_id: OrgId
) -> Envelope[JobAccepted]:
    """Back up the organization's database; the job's `result.fileId` is the backup, a file
    of the organization (`GET /orgs/{orgId}/files/{fileId}/download`)."""
    await tenants.operations.check_ready(org_id)
    job = await enqueue(
        session, tasks.BACKUP_JOB, {}, organization_id=org_id, created_by=admin.id, max_attempts=3
    )
    return ok(JobAccepted(job_id=str(job.id)))


@router.post("/orgs/{orgId}/restore", status_code=status.HTTP_202_ACCEPTED)
async def restore(
    admin: PlatformAdmin,
    session: SessionDep,
    tenants: TenantDatabasesDep,
    org_id: OrgId,
    body: RestoreRequest,
) -> Envelope[JobAccepted]:
    """Restore a backup of the organization into a fresh database on its server and switch
    to it (the old database is dropped). Writes answer 503 `tenant_unavailable` meanwhile."""
    await tenants.operations.check_ready(org_id)
    if await tasks.backup_file(tenants.operations, org_id, body.file_id) is None:
        raise ValidationFailed("fileId is not a backup of this organization")
    job = await enqueue(
        session,
        tasks.RESTORE_JOB,
        {"fileId": str(body.file_id)},
        organization_id=org_id,
        created_by=admin.id,
        max_attempts=1,
    )
    return ok(JobAccepted(job_id=str(job.id)))


@router.post("/orgs/{orgId}/move", status_code=status.HTTP_202_ACCEPTED)
async def move(
    admin: PlatformAdmin,
    session: SessionDep,
    tenants: TenantDatabasesDep,
    org_id: OrgId,
    body: MoveRequest,
) -> Envelope[JobAccepted]:
    """Move the organization's database to another server (GET /admin/tenants names them).
    Writes answer 503 `tenant_unavailable` with `Retry-After` until the switch; reads work."""
    record = await tenants.operations.check_ready(org_id)
    tenants.operations.target_server(record, body.server)
    job = await enqueue(
        session,
        tasks.MOVE_JOB,
        {"server": body.server},
        organization_id=org_id,
        created_by=admin.id,
        max_attempts=1,
    )
    return ok(JobAccepted(job_id=str(job.id)))
