"""Sessions and refresh tokens: start, rotate (with reuse detection), revoke.

A session is one login; its refresh tokens form a family. Rotation is a compare-and-set
on `rotated_at`, so of N concurrent refreshes with the same token exactly one wins. The
others see a rotated token: within `REFRESH_REUSE_GRACE_SECONDS` of the rotation they get
the same successor (two tabs refreshing at once), later it is treated as theft and the
whole family is revoked.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import utcnow
from tenantry.core.dml import update_returning
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
    session: AsyncSession,
    security: Security,
    user: User,
    auth_session: AuthSession,
    raw: str | None = None,
) -> IssuedTokens:
    raw = raw or new_opaque_token()
    session.add(RefreshToken(session_id=auth_session.id, token_hash=sha256_hex(raw)))
    await session.flush()
    return _pair(security, user, auth_session, raw)


def _pair(
    security: Security, user: User, auth_session: AuthSession, refresh_token: str
) -> IssuedTokens:
    access = security.tokens.issue(user_id=user.id, session_id=auth_session.id, role=user.role)
    return IssuedTokens(
        user=user,
        session_id=auth_session.id,
        access_token=access,
        refresh_token=refresh_token,
        expires_in=security.tokens.ttl_seconds,
    )


def _successor_context(token_hash: str) -> str:
    # Bound to the rotated row: a sealed value copied onto another row does not open.
    return f"refresh-successor:{token_hash}"


async def rotate_refresh_token(
    session: AsyncSession,
    security: Security,
    revocations: Revocations,
    raw: str,
    client: ClientInfo,
    *,
    reuse_grace_seconds: int,
) -> IssuedTokens:
    """Exchange a live refresh token for a new pair; a replayed one revokes its family.

    The successor is drawn before the compare-and-set so the winner can leave it sealed
    on the rotated row: a replay within `reuse_grace_seconds` gets that same successor.
    """
    now = utcnow()
    token_hash = sha256_hex(raw)
    successor = new_opaque_token()
    sealed = (
        security.secrets.encrypt(successor, context=_successor_context(token_hash))
        if reuse_grace_seconds > 0
        else None
    )
    claimed = await update_returning(
        session,
        RefreshToken,
        [RefreshToken.token_hash == token_hash, RefreshToken.rotated_at.is_(None)],
        {"rotated_at": now, "successor_sealed": sealed},
        [RefreshToken.session_id],
    )
    session_id = claimed.scalar_one_or_none()
    if session_id is None:
        replayed = await _successor_within_grace(
            session, security, token_hash, now, reuse_grace_seconds
        )
        if replayed is not None:
            return replayed
        await _handle_unusable_token(session, revocations, token_hash)
        raise _invalid_refresh()
    auth_session, user = await _live_session(session, session_id, now)
    auth_session.last_used_at = now
    auth_session.ip = client.ip or auth_session.ip
    await _forget_expired_successors(session, session_id, now, reuse_grace_seconds)
    return await _issue(session, security, user, auth_session, successor)


async def _live_session(
    session: AsyncSession, session_id: uuid.UUID, now: dt.datetime
) -> tuple[AuthSession, User]:
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
    return auth_session, user


async def _successor_within_grace(
    session: AsyncSession,
    security: Security,
    token_hash: str,
    now: dt.datetime,
    grace_seconds: int,
) -> IssuedTokens | None:
    """The successor of a token rotated less than `grace_seconds` ago, with a new access token.

    None when there is no such successor (unknown token, rotated too long ago, grace off):
    the caller then treats the token as replayed.
    """
    row = (
        await session.execute(
            select(
                RefreshToken.session_id, RefreshToken.rotated_at, RefreshToken.successor_sealed
            ).where(RefreshToken.token_hash == token_hash)
        )
    ).one_or_none()
    if row is None or row.rotated_at is None or row.successor_sealed is None:
        return None
    if now - row.rotated_at > dt.timedelta(seconds=grace_seconds):
        return None
    auth_session, user = await _live_session(session, row.session_id, now)
    try:
        successor = security.secrets.decrypt(
            row.successor_sealed, context=_successor_context(token_hash)
        )
    except ValueError:  # sealed under another SECRET_KEY: no grace, a plain replay
        return None
    security_log.info(
        "refresh_token_grace_reuse",
        security_event="security.refresh_token_grace_reuse",
        session_id=str(auth_session.id),
        user_id=str(user.id),
    )
    auth_session.last_used_at = now
    return _pair(security, user, auth_session, successor)


async def _forget_expired_successors(
    session: AsyncSession, session_id: uuid.UUID, now: dt.datetime, grace_seconds: int
) -> None:
    """Drop sealed successors whose grace interval is over (they are never handed out again)."""
    await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.session_id == session_id,
            RefreshToken.successor_sealed.is_not(None),
            RefreshToken.rotated_at < now - dt.timedelta(seconds=grace_seconds),
        )
        .values(successor_sealed=None)
        .execution_options(synchronize_session=False)
    )


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
    if sessions:  # an ended session's sealed successors are useless: drop them now
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.session_id.in_([s.id for s in sessions]),
                RefreshToken.successor_sealed.is_not(None),
            )
            .values(successor_sealed=None)
            .execution_options(synchronize_session=False)
        )
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
