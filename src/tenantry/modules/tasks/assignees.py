"""Who may be assigned a task: a current member of the organization.

The one place the rule lives; `TaskService` asks it before any assignment.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.errors import NotFound, ValidationFailed
from tenantry.modules.users.service import get_user


async def is_current_member(session: AsyncSession, user_id: uuid.UUID) -> bool:
    # Memberships arrive with the organizations module; until then an assignee must be
    # an existing, active account. Switch to the membership lookup when it lands.
    try:
        user = await get_user(session, user_id)
    except NotFound:
        return False
    return user.is_active


async def require_assignable(session: AsyncSession, user_id: uuid.UUID | None) -> None:
    """400 unless `user_id` (when given) is a current member of the bound organization."""
    if user_id is not None and not await is_current_member(session, user_id):
        raise ValidationFailed(
            details=[{"field": "assigneeId", "message": "Not a member of this organization"}]
        )
