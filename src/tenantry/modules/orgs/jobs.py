"""The tenant view of the jobs table: list, read, cancel the organization's own jobs.

`jobs` belongs to core and is not `TenantOwned` (the worker claims jobs of every
organization, and platform jobs have no organization), so the automatic criteria do not
apply. Every query here filters by the bound context's organization explicitly, and
`cancel` runs only after the job was found that way; the isolation test walks these
routes like any other.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.errors import Forbidden, NotFound
from tenantry.core.jobs import cancel
from tenantry.core.jobs.models import Job
from tenantry.core.listing import created_at_key, offset_page
from tenantry.core.mail.outbox import JOB_TYPE as MAIL_JOB_TYPE
from tenantry.core.permissions import grants_on_row
from tenantry.core.tenancy import require_tenant
from tenantry.modules.exports.service import JOB_TYPE as EXPORT_JOB_TYPE


async def list_jobs(
    session: AsyncSession, *, status: str | None, offset: int, limit: int
) -> tuple[list[Job], int]:
    conditions = [Job.organization_id == require_tenant(session).organization_id]
    if status is not None:
        conditions.append(Job.status == status)
    return await offset_page(
        session,
        select(Job).where(*conditions),
        key=created_at_key(Job.created_at),
        id_column=Job.id,
        descending=True,
        offset=offset,
        limit=limit,
    )


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job:
    job = await session.scalar(
        select(Job).where(
            Job.id == job_id, Job.organization_id == require_tenant(session).organization_id
        )
    )
    if job is None:
        raise NotFound("Job not found")
    return job


# Cancelling a job needs `jobs:cancel`, or the permission that starts a job of its type:
# reading jobs is not enough to stop someone else's export. A type not listed here can
# be cancelled with `jobs:cancel` only.
CANCEL_PERMISSIONS: dict[str, str] = {
    EXPORT_JOB_TYPE: "exports:create",
    MAIL_JOB_TYPE: "members:invite",  # the organization's mail: invitations
}


async def cancel_job(session: AsyncSession, job_id: uuid.UUID) -> Job:
    job = await get_job(session, job_id)  # 404 for another organization's job first
    context = require_tenant(session)
    starter = CANCEL_PERMISSIONS.get(job.type)
    held, actor = context.permissions, context.actor_id
    if not any(  # an `:own` grant cancels only the actor's own jobs
        grants_on_row(held, permission, actor_id=actor, created_by=job.created_by)
        for permission in ("jobs:cancel", *([starter] if starter else []))
    ):
        raise Forbidden(f"Cancelling this job needs jobs:cancel or {starter or 'jobs:cancel'}")
    return await cancel(session, job_id)
