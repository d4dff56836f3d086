"""Starting an export: one queued `exports.build` job of the organization (see tasks.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.jobs import enqueue
from tenantry.core.jobs.models import Job
from tenantry.core.tenancy import TenantContext

JOB_TYPE = "exports.build"
MAX_ATTEMPTS = 3


async def start_export(session: AsyncSession, ctx: TenantContext, export_format: str) -> Job:
    """Queue the export in the request's transaction (it runs once that commits)."""
    return await enqueue(
        session,
        JOB_TYPE,
        {"format": export_format},
        organization_id=ctx.organization_id,
        created_by=ctx.actor_id,
        max_attempts=MAX_ATTEMPTS,
    )
