"""Exports endpoint (API.md, Jobs/exports/files): `POST /orgs/{orgId}/exports` → 202."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from tenantry.core.authz import require
from tenantry.core.responses import Envelope, JobAccepted, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.exports import service
from tenantry.modules.exports.schemas import ExportCreate
from tenantry.modules.plans.enforce import feature

router = APIRouter(
    prefix="/orgs/{orgId}/exports",
    tags=["exports"],
    route_class=UnitOfWorkRoute,
    dependencies=[Depends(feature("exports"))],
)

CanExport = Annotated[TenantContext, Depends(require("exports:create"))]


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def create_export(
    body: ExportCreate, ctx: CanExport, session: SessionDep
) -> Envelope[JobAccepted]:
    """Start an export of the organization's data; follow it at `/jobs/{jobId}`.

    When the job has succeeded, `result.fileId` is a file of the organization (download
    it with `GET /files/{fileId}/download`).
    """
    job = await service.start_export(session, ctx, body.format)
    return ok(JobAccepted(job_id=str(job.id)))
