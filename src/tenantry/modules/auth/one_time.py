"""Single-use emailed tokens (password reset, email verification): hashed, expiring, used once."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import utcnow
from tenantry.core.dml import update_returning
from tenantry.core.errors import InvalidToken
from tenantry.core.security import new_opaque_token, sha256_hex
from tenantry.modules.auth.models import OneTimeToken, TokenPurpose


async def issue_one_time_token(
    session: AsyncSession, user_id: uuid.UUID, purpose: TokenPurpose, ttl_seconds: int
) -> str:
    """Store the hash of a fresh token and return the raw value (for the email only)."""
    raw = new_opaque_token()
    session.add(
        OneTimeToken(
            user_id=user_id,
            purpose=purpose.value,
            token_hash=sha256_hex(raw),
            expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds),
        )
    )
    await session.flush()
    return raw


async def consume_one_time_token(
    session: AsyncSession, raw: str, purpose: TokenPurpose
) -> uuid.UUID:
    """Mark the token used (once, atomically) and return its user id; 400 otherwise."""
    now = utcnow()
    result = await update_returning(
        session,
        OneTimeToken,
        [
            OneTimeToken.token_hash == sha256_hex(raw),
            OneTimeToken.purpose == purpose.value,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        ],
        {"used_at": now},
        [OneTimeToken.user_id],
    )
    user_id: uuid.UUID | None = result.scalar_one_or_none()
    if user_id is None:
        raise InvalidToken()
    return user_id


async def revoke_one_time_tokens(
    session: AsyncSession, user_id: uuid.UUID, purpose: TokenPurpose
) -> None:
    """Spend every outstanding token of `user_id` for `purpose` (a newer event supersedes them).

    A password change or reset makes every earlier reset link void: a link read from an
    old mailbox copy must not undo the new password.
    """
    await session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose.value,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
