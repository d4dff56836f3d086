"""Per-organization storage usage: one counter row, changed with each upload and delete.

`storage_used(session, org_id)` is what a plan limit (`storageBytes`) reads: a
primary-key lookup, no `SUM` over the files table. The counter moves in the same
transaction as the file row, so a rolled-back upload never counts.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.dml import upsert
from tenantry.core.tenancy import require_tenant
from tenantry.modules.files.models import StorageUsage


async def storage_used(session: AsyncSession, org_id: uuid.UUID) -> int:
    """Bytes stored by `org_id`'s live files (the session must be bound to that organization)."""
    used = await session.scalar(
        select(StorageUsage.bytes_used).where(StorageUsage.organization_id == org_id)
    )
    return int(used or 0)


async def files_stored(session: AsyncSession, org_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(StorageUsage.files_count).where(StorageUsage.organization_id == org_id)
    )
    return int(count or 0)


async def change_usage(session: AsyncSession, *, bytes_delta: int, files_delta: int) -> None:
    """Add to the bound organization's counters (an atomic upsert: concurrent uploads add up)."""
    org_id = require_tenant(session).organization_id
    statement = upsert(
        session,
        StorageUsage,
        [StorageUsage.organization_id],
        lambda new: {
            "bytes_used": StorageUsage.bytes_used + new.bytes_used,
            "files_count": StorageUsage.files_count + new.files_count,
        },
    )
    await session.execute(
        statement,
        [{"organization_id": org_id, "bytes_used": bytes_delta, "files_count": files_delta}],
    )
