"""Whether accounts may act: read by other features' credentials (API keys), in SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from tenantry.modules.users.models import User


def usable_account(
    user_id: ColumnElement[uuid.UUID | None] | QueryableAttribute[uuid.UUID | None],
) -> ColumnElement[bool]:
    """SQL: the account `user_id` may act (active, not deleted, not erased).

    For credentials that act for a user without a session (API keys): read in the same
    statement as the credential, so the database is the authority on every use.
    """
    return exists().where(User.id == user_id, User.is_active.is_(True), User.deleted_at.is_(None))


async def usable_user_ids(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """The accounts among `user_ids` that may act."""
    if not user_ids:
        return set()
    rows = await session.scalars(
        select(User.id).where(
            User.id.in_(set(user_ids)), User.is_active.is_(True), User.deleted_at.is_(None)
        )
    )
    return set(rows)
