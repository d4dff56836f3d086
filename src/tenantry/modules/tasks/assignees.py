"""Who may be assigned a task: a current member of the organization.

The one place the rule lives; the task services ask it before any assignment.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.errors import ValidationFailed
from tenantry.core.tenancy import require_tenant
from tenantry.modules.orgs.members import find_member


async def is_current_member(session: AsyncSession, user_id: uuid.UUID) -> bool:
    organization_id = require_tenant(session).organization_id
    return await find_member(session, organization_id, user_id) is not None


async def require_assignable(session: AsyncSession, user_id: uuid.UUID | None) -> None:
    """400 unless `user_id` (when given) is a current member of the bound organization."""
    if user_id is not None and not await is_current_member(session, user_id):
        raise ValidationFailed(
            details=[{"field": "assigneeId", "message": "Not a member of this organization"}]
        )
