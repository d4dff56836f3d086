"""How each limit is counted for one organization (the session is bound to it)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.modules.files.usage import storage_used
from tenantry.modules.orgs.models import Membership
from tenantry.modules.projects.models import Project


async def members_used(session: AsyncSession, org_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(Membership)
    return int(await session.scalar(query.where(Membership.organization_id == org_id)) or 0)


async def projects_used(session: AsyncSession, org_id: uuid.UUID) -> int:
    # Tenant-scoped automatically (this organization, not deleted).
    return int(await session.scalar(select(func.count()).select_from(Project)) or 0)


async def storage_bytes(session: AsyncSession, org_id: uuid.UUID) -> int:
    return await storage_used(session, org_id)


async def used(session: AsyncSession, org_id: uuid.UUID, name: str) -> int | None:
    """What `name` uses now, or None for a limit that is not a count (a rate)."""
    if name == "members":
        return await members_used(session, org_id)
    if name == "projects":
        return await projects_used(session, org_id)
    if name == "storageBytes":
        return await storage_used(session, org_id)
    return None
