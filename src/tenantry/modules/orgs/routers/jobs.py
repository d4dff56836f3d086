"""Jobs of an organization (API.md, Jobs): list, read, cancel (`jobs:read`)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from tenantry.core.authz import TenantSessionDep, require
from tenantry.core.jobs.models import Job
from tenantry.core.jobs.runtime import JobsRuntime
from tenantry.core.openapi import errors
from tenantry.core.responses import Envelope, ListQuery, Page, Schema, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.orgs import jobs
from tenantry.services import ServicesDep

router = APIRouter(prefix="/orgs/{orgId}/jobs", tags=["jobs"], route_class=UnitOfWorkRoute)
Reader = Annotated[TenantContext, Depends(require("jobs:read"))]
JobId = Annotated[uuid.UUID, Path(alias="jobId")]


class JobListQuery(ListQuery):
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None


class JobOut(Schema):
    id: uuid.UUID
    type: str
    status: str
    progress: int
    message: str | None
    attempts: int
    result: Any | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def _out(job: Job, jobs_runtime: JobsRuntime | None = None) -> JobOut:
    out = JobOut.model_validate(job)
    reported = jobs_runtime.reported_progress(job.id) if jobs_runtime is not None else None
    if reported is not None and job.status == "running":  # SQLite: not in the row yet
        out = out.model_copy(update={"progress": reported[0], "message": reported[1]})
    return out


@router.get("")
async def list_jobs(
    _ctx: Reader,
    session: SessionDep,
    services: ServicesDep,
    query: Annotated[JobListQuery, Query()],
) -> Page[JobOut]:
    """The organization's jobs, newest first (status filter; pages)."""
    rows, total = await jobs.list_jobs(
        session, status=query.status, offset=query.offset, limit=query.limit
    )
    listed = [_out(j, services.jobs) for j in rows]
    return page(listed, total=total, page=query.page, limit=query.limit)


@router.get("/{jobId}")
async def get_job(
    job_id: JobId, _ctx: Reader, session: SessionDep, services: ServicesDep
) -> Envelope[JobOut]:
    """One job: status, progress, result or error."""
    return ok(_out(await jobs.get_job(session, job_id), services.jobs))


@router.post("/{jobId}/cancel", responses=errors({403: ["forbidden"]}))
async def cancel_job(job_id: JobId, session: TenantSessionDep) -> Envelope[JobOut]:
    """Cancel a job (`jobs:cancel`, or the permission that starts its type, e.g. exports:create)."""
    return ok(_out(await jobs.cancel_job(session, job_id)))
