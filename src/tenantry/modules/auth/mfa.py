"""TOTP multi-factor authentication: setup, enable, verify (once per window), disable.

Wrong codes are counted in the database with an atomic increment; the 5th in a row
locks verification for 15 minutes. Callers run `verify_mfa_code` inside
`run_committing_failures`, so the count survives the 401 it causes.

Enabling and disabling need the current password as well as a code: an access token alone
(15 minutes, maybe stolen) must not be enough to put a second factor the owner does not
hold on the account. Both mail the owner a security notice.
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import secrets
import time

import pyotp
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.dml import update_returning
from tenantry.core.errors import Conflict, RateLimited, Unauthorized
from tenantry.core.logging import get_logger
from tenantry.core.security import AccessClaims, Security
from tenantry.modules.auth.credentials import invalid_credentials
from tenantry.modules.auth.deps import ClientInfo, load_principal
from tenantry.modules.auth.emails import greeting_context, send_auth_email
from tenantry.modules.auth.models import MfaRecoveryCode
from tenantry.modules.auth.transaction import CommitThenRaise, run_committing_failures
from tenantry.modules.users.models import User

MAX_FAILED_ATTEMPTS = 5
LOCK_SECONDS = 15 * 60
RECOVERY_CODE_COUNT = 10
TOTP_PERIOD = 30
_SECRET_CONTEXT = "mfa-totp:"

security_log = get_logger("tenantry.security")


def _context(user: User) -> str:
    return f"{_SECRET_CONTEXT}{user.id}"


def _invalid_code() -> Unauthorized:
    return Unauthorized("The MFA code is invalid", code="invalid_mfa_code")


async def start_mfa_setup(security: Security, settings: Settings, user: User) -> tuple[str, str]:
    """A new secret (stored encrypted, not yet active) and its `otpauth://` URI."""
    if user.mfa_enabled:
        raise Conflict("MFA is already enabled; disable it first")
    secret = pyotp.random_base32()
    user.mfa_secret_encrypted = security.secrets.encrypt(secret, context=_context(user))
    user.mfa_last_step = None
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=settings.mfa_issuer)
    return secret, uri


async def enable_mfa(
    session: AsyncSession, security: Security, user: User, code: str, client: ClientInfo
) -> list[str]:
    """Turn MFA on for `user`, whose password the caller has already checked."""
    if user.mfa_enabled:
        raise Conflict("MFA is already enabled")
    if user.mfa_secret_encrypted is None:
        raise Conflict("Call /auth/mfa/setup first")
    await verify_mfa_code(session, security, user, code, allow_recovery=False)
    user.mfa_enabled = True
    codes = await _replace_recovery_codes(session, security, user)
    security_log.info("mfa_enabled", security_event="security.mfa_enabled", user_id=str(user.id))
    await _send_mfa_notice(session, user, client, "two-factor authentication was turned on")
    return codes


async def disable_mfa(
    session: AsyncSession, security: Security, user: User, code: str, client: ClientInfo
) -> None:
    """Turn MFA off for `user`, whose password the caller has already checked."""
    if not user.mfa_enabled:
        raise Conflict("MFA is not enabled")
    await verify_mfa_code(session, security, user, code)
    user.mfa_enabled = False
    user.mfa_secret_encrypted = None
    user.mfa_last_step = None
    await session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id))
    security_log.info("mfa_disabled", security_event="security.mfa_disabled", user_id=str(user.id))
    await _send_mfa_notice(session, user, client, "two-factor authentication was turned off")


async def _send_mfa_notice(
    session: AsyncSession, user: User, client: ClientInfo, event: str
) -> None:
    """A `security_notice` to the owner, committed with the change it reports."""
    await send_auth_email(
        session,
        to=user.email,
        template="security_notice",
        context=greeting_context(user)
        | {
            "event": event,
            "occurred_at": utcnow().isoformat(timespec="seconds"),
            "ip": client.ip or "unknown",
            "device": client.user_agent or "unknown",
        },
    )


async def verify_mfa_code(
    session: AsyncSession,
    security: Security,
    user: User,
    code: str,
    *,
    allow_recovery: bool = True,
) -> None:
    """Accept a TOTP code (each 30 s step once) or an unused recovery code; count failures."""
    now = utcnow()
    if user.mfa_locked_until is not None and user.mfa_locked_until > now:
        retry_after = math.ceil((user.mfa_locked_until - now).total_seconds())
        raise RateLimited(retry_after, "Too many wrong MFA codes; try again later")
    if await _accept_totp(session, security, user, code) or (
        allow_recovery and await _accept_recovery_code(session, security, user, code)
    ):
        if user.mfa_failed_attempts:
            user.mfa_failed_attempts = 0
        return
    await _count_failure(session, user, now)
    raise CommitThenRaise(_invalid_code())


async def _accept_totp(session: AsyncSession, security: Security, user: User, code: str) -> bool:
    digits = code.strip().replace(" ", "")
    if user.mfa_secret_encrypted is None or len(digits) != 6 or not digits.isdigit():
        return False
    secret = security.secrets.decrypt(user.mfa_secret_encrypted, context=_context(user))
    totp = pyotp.TOTP(secret)
    current = int(time.time()) // TOTP_PERIOD
    for step in (current, current - 1, current + 1):  # one step of clock drift either way
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD), digits):
            return await _claim_step(session, user, step)
    return False


async def _claim_step(session: AsyncSession, user: User, step: int) -> bool:
    """Compare-and-set the last used step: a code replayed within its window loses."""
    claimed = await session.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.mfa_last_step.is_(None), User.mfa_last_step < step),
        )
        .values(mfa_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(claimed, "rowcount", 0) == 1)


def _normalise_recovery_code(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


async def _accept_recovery_code(
    session: AsyncSession, security: Security, user: User, code: str
) -> bool:
    code_hash = security.codes.hash(_normalise_recovery_code(code))
    claimed = await session.execute(
        update(MfaRecoveryCode)
        .where(
            MfaRecoveryCode.user_id == user.id,
            MfaRecoveryCode.code_hash == code_hash,
            MfaRecoveryCode.used_at.is_(None),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    used = bool(getattr(claimed, "rowcount", 0) == 1)
    if used:
        security_log.info(
            "mfa_recovery_code_used", security_event="security.mfa_recovery_code_used"
        )
    return used


async def _count_failure(session: AsyncSession, user: User, now: dt.datetime) -> None:
    result = await update_returning(
        session,
        User,
        [User.id == user.id],
        {"mfa_failed_attempts": User.mfa_failed_attempts + 1},
        [User.mfa_failed_attempts],
    )
    failures = result.scalar_one()
    if failures >= MAX_FAILED_ATTEMPTS:
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(
                mfa_failed_attempts=0, mfa_locked_until=now + dt.timedelta(seconds=LOCK_SECONDS)
            )
            .execution_options(synchronize_session=False)
        )
        security_log.warning(
            "mfa_locked", security_event="security.mfa_locked", user_id=str(user.id)
        )


async def _replace_recovery_codes(
    session: AsyncSession, security: Security, user: User
) -> list[str]:
    await session.execute(delete(MfaRecoveryCode).where(MfaRecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    for code in codes:
        code_hash = security.codes.hash(_normalise_recovery_code(code))
        session.add(MfaRecoveryCode(user_id=user.id, code_hash=code_hash))
    await session.flush()
    return codes


def _new_recovery_code() -> str:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)
    raw = "".join(secrets.choice(alphabet) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


async def remaining_recovery_codes(session: AsyncSession, user: User) -> int:
    rows = await session.scalars(
        select(MfaRecoveryCode.id).where(
            MfaRecoveryCode.user_id == user.id, MfaRecoveryCode.used_at.is_(None)
        )
    )
    return len(list(rows))


async def enable_mfa_for(
    database: Database,
    security: Security,
    claims: AccessClaims,
    client: ClientInfo,
    password: str,
    code: str,
) -> list[str]:
    """`enable_mfa` for the caller once its password matched (failure counts kept on a 401)."""
    verified_hash = await _check_password(database, security, claims, password)

    async def work(session: AsyncSession) -> list[str]:
        user = await _principal_with_hash(session, claims, verified_hash)
        return await enable_mfa(session, security, user, code, client)

    return await run_committing_failures(database, work)


async def disable_mfa_for(
    database: Database,
    security: Security,
    claims: AccessClaims,
    client: ClientInfo,
    password: str,
    code: str,
) -> None:
    """`disable_mfa` for the caller once its password matched (failure counts kept on a 401)."""
    verified_hash = await _check_password(database, security, claims, password)

    async def work(session: AsyncSession) -> None:
        user = await _principal_with_hash(session, claims, verified_hash)
        await disable_mfa(session, security, user, code, client)

    await run_committing_failures(database, work)


async def _check_password(
    database: Database, security: Security, claims: AccessClaims, password: str
) -> str:
    """The caller's password hash, once `password` matched it; 401 otherwise.

    Checked before any write transaction opens (hashing takes a while; on SQLite a write
    transaction would hold the database lock meanwhile) and before the code is looked
    at: a wrong password consumes no TOTP step and counts no MFA failure.
    """
    async with database.session(write=False) as session:
        user = await load_principal(session, claims)
    matches, _ = await security.passwords.verify(password, user.password_hash)
    if not matches:
        raise invalid_credentials()
    return user.password_hash


async def _principal_with_hash(
    session: AsyncSession, claims: AccessClaims, verified_hash: str
) -> User:
    user = await load_principal(session, claims)
    if user.password_hash != verified_hash:
        raise invalid_credentials()  # the password changed while we were hashing
    return user
