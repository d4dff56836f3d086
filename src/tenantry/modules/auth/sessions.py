"""Sessions and refresh tokens: start, rotate (with reuse detection), revoke.

A session is one login; its refresh tokens form a family. Rotation is a compare-and-set
on `rotated_at`, so of N concurrent refreshes with the same token exactly one wins; the
others see a rotated token, which is treated as theft: the whole family is revoked.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import utcnow
from tenantry.core.errors import NotFound, Unauthorized
from tenantry.core.logging import get_logger
from tenantry.core.security import Security, new_opaque_token, sha256_hex
from tenantry.modules.auth.deps import ClientInfo
from tenantry.modules.auth.emails import greeting_context, send_auth_email
from tenantry.modules.auth.models import AuthSession, MfaRecoveryCode, OneTimeToken, RefreshToken
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.auth.transaction import CommitThenRaise
from tenantry.modules.users.models import User

security_log = get_logger("tenantry.security")


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    user: User
    session_id: uuid.UUID
    access_token: str
    refresh_token: str
    expires_in: int


def _invalid_refresh() -> Unauthorized:
    return Unauthorized("The refresh token is invalid or expired")


async def start_session(
    session: AsyncSession,
    security: Security,
    settings: Settings,
    user: User,
    client: ClientInfo,
) -> IssuedTokens:
    now = utcnow()
    auth_session = AuthSession(
        user_id=user.id,
        user_agent=client.user_agent,
        ip=client.ip,
        created_at=now,
        last_used_at=now,
        expires_at=now + dt.timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    session.add(auth_session)
    await session.flush()
    return await _issue(session, security, user, auth_session)


async def _issue(
    session: AsyncSession, security: Security, user: User, auth_session: AuthSession
) -> IssuedTokens:
    raw = new_opaque_token()
    session.add(RefreshToken(session_id=auth_session.id, token_hash=sha256_hex(raw)))
    await session.flush()
    access = security.tokens.issue(user_id=user.id, session_id=auth_session.id, role=user.role)
    return IssuedTokens(
        user=user,
        session_id=auth_session.id,
        access_token=access,
        refresh_token=raw,
        expires_in=security.tokens.ttl_seconds,
    )


async def rotate_refresh_token(
    session: AsyncSession,
    security: Security,
    revocations: Revocations,
    raw: str,
    client: ClientInfo,
) -> IssuedTokens:
    """Exchange a live refresh token for a new pair; a replayed one revokes its family."""
    now = utcnow()
    token_hash = sha256_hex(raw)
    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.rotated_at.is_(None))
        .values(rotated_at=now)
        .returning(RefreshToken.session_id)
        .execution_options(synchronize_session=False)
    )
    session_id = claimed.scalar_one_or_none()
    if session_id is None:
        await _handle_unusable_token(session, revocations, token_hash)
        raise _invalid_refresh()
    auth_session = await session.get(AuthSession, session_id)
    if (
        auth_session is None
        or auth_session.revoked_at is not None
        or auth_session.expires_at <= now
    ):
        raise _invalid_refresh()
    user = await session.get(User, auth_session.user_id)
    if user is None or not user.is_usable:
        raise _invalid_refresh()
    auth_session.last_used_at = now
    auth_session.ip = client.ip or auth_session.ip
    return await _issue(session, security, user, auth_session)


async def _handle_unusable_token(
    session: AsyncSession, revocations: Revocations, token_hash: str
) -> None:
    reused = await session.scalar(
        select(RefreshToken.session_id).where(RefreshToken.token_hash == token_hash)
    )
    if reused is None:
        return
    auth_session = await session.get(AuthSession, reused)
    if auth_session is None:
        return
    security_log.warning(
        "refresh_token_reuse",
        security_event="security.refresh_token_reuse",
        session_id=str(auth_session.id),
        user_id=str(auth_session.user_id),
        already_revoked=auth_session.revoked_at is not None,
    )
    if auth_session.revoked_at is None:
        await revoke_sessions(session, revocations, [auth_session], reason="token_reuse")
        user = await session.get(User, auth_session.user_id)
        if user is not None and user.is_usable:
            await send_auth_email(
                session,
                to=user.email,
                template="security_notice",
                context=greeting_context(user)
                | {
                    "event": "an already-used refresh token of one of your sessions was "
                    "presented again (it may have been stolen), so that session was ended",
                    "occurred_at": utcnow().isoformat(timespec="seconds"),
                    "device": auth_session.user_agent or "unknown",
                },
            )
        raise CommitThenRaise(_invalid_refresh())


async def revoke_sessions(
    session: AsyncSession,
    revocations: Revocations,
    sessions: list[AuthSession],
    *,
    reason: str,
) -> None:
    now = utcnow()
    for auth_session in sessions:
        if auth_session.revoked_at is None:
            auth_session.revoked_at = now
            auth_session.revoked_reason = reason
    await session.flush()
    await revocations.revoke_sessions([s.id for s in sessions])


async def active_sessions(session: AsyncSession, user_id: uuid.UUID) -> list[AuthSession]:
    result = await session.scalars(
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .order_by(AuthSession.last_used_at.desc())
    )
    return list(result)


async def revoke_by_refresh_token(
    session: AsyncSession, revocations: Revocations, raw: str
) -> None:
    """Logout: end the session a refresh token belongs to; unknown tokens are ignored."""
    session_id = await session.scalar(
        select(RefreshToken.session_id).where(RefreshToken.token_hash == sha256_hex(raw))
    )
    if session_id is None:
        return
    auth_session = await session.get(AuthSession, session_id)
    if auth_session is not None and auth_session.revoked_at is None:
        await revoke_sessions(session, revocations, [auth_session], reason="logout")


async def revoke_session_of_user(
    session: AsyncSession, revocations: Revocations, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    auth_session = await session.get(AuthSession, session_id)
    if auth_session is None or auth_session.user_id != user_id or auth_session.revoked_at:
        raise NotFound("Session not found")
    await revoke_sessions(session, revocations, [auth_session], reason="revoked")


async def end_all_sessions(
    session: AsyncSession,
    revocations: Revocations,
    user: User,
    *,
    reason: str,
    keep_session_id: uuid.UUID | None = None,
) -> None:
    """Revoke every session of `user` (but `keep_session_id`).

    Without a kept session, every access token issued until now is refused as well
    (`sessions_valid_after`); with one, the other sessions' ids are revoked instead, so
    the caller's own access token keeps working.
    """
    doomed = [s for s in await active_sessions(session, user.id) if s.id != keep_session_id]
    await revoke_sessions(session, revocations, doomed, reason=reason)
    if keep_session_id is None:
        now = utcnow()
        user.sessions_valid_after = now
        await session.flush()
        await revocations.invalidate_user_tokens(user.id, now)


async def all_sessions(session: AsyncSession, user_id: uuid.UUID) -> list[AuthSession]:
    result = await session.scalars(
        select(AuthSession)
        .where(AuthSession.user_id == user_id)
        .order_by(AuthSession.created_at.desc())
    )
    return list(result)


async def erase_credentials(session: AsyncSession, revocations: Revocations, user: User) -> None:
    """Account erasure: end every session, then delete sessions, tokens and MFA codes."""
    await end_all_sessions(session, revocations, user, reason="account_deleted")
    for model in (OneTimeToken, MfaRecoveryCode, AuthSession):
        await session.execute(delete(model).where(model.user_id == user.id))
