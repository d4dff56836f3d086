"""Accounts and password flows: register, login, forgot/reset/change password, verify email."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.errors import Conflict, InvalidToken, Unauthorized
from tenantry.core.jobs import enqueue
from tenantry.core.logging import get_logger
from tenantry.core.mail import seal_job_payload
from tenantry.core.security import Abandoned, Security
from tenantry.modules.auth.credentials import invalid_credentials, verify_password_or_fail
from tenantry.modules.auth.deps import ClientInfo
from tenantry.modules.auth.emails import (
    duration_text,
    greeting_context,
    link_with_token,
    send_auth_email,
    token_link,
)
from tenantry.modules.auth.mfa import verify_mfa_code
from tenantry.modules.auth.models import TokenPurpose
from tenantry.modules.auth.one_time import (
    consume_one_time_token,
    issue_one_time_token,
    revoke_one_time_tokens,
)
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.auth.schemas import LoginRequest, RegisterRequest
from tenantry.modules.auth.sessions import IssuedTokens, end_all_sessions, start_session
from tenantry.modules.auth.transaction import run_committing_failures
from tenantry.modules.users.models import User
from tenantry.modules.users.service import create_user, find_user_by_email

security_log = get_logger("tenantry.security")


async def register(
    session: AsyncSession,
    security: Security,
    settings: Settings,
    body: RegisterRequest,
    client: ClientInfo,
) -> IssuedTokens:
    user = await create_user(
        session,
        security,
        email=body.email,
        password=body.password,
        first_name=body.first_name,
        last_name=body.last_name,
    )
    await send_verification_email(session, settings, user)
    return await start_session(session, security, settings, user, client)


async def login(
    database: Database,
    security: Security,
    settings: Settings,
    body: LoginRequest,
    client: ClientInfo,
    *,
    abandoned: Abandoned | None = None,
) -> IssuedTokens:
    """Unknown email, wrong password, inactive or deleted user: one answer, similar time.

    The password is checked with no transaction open (hashing takes a while; on SQLite a
    write transaction would hold the database lock meanwhile), then the login completes
    in a transaction of its own that keeps MFA failure counts even when it answers 401.
    When more logins wait for a hash than `PASSWORD_HASH_QUEUE`, 503 before any lookup;
    a login whose client has gone by the time a hashing thread is free is not hashed.
    """
    security.passwords.check_capacity()
    async with database.session(write=False) as session:
        user = await find_user_by_email(session, body.email, include_deleted=True)
    if user is None:
        await security.passwords.waste_time(body.password, abandoned=abandoned)
        raise invalid_credentials()
    verified_hash = user.password_hash
    matches, new_hash = await security.passwords.verify(
        body.password, verified_hash, abandoned=abandoned
    )
    if not matches or not user.is_usable:
        raise invalid_credentials()

    async def complete(session: AsyncSession) -> IssuedTokens:
        current = await session.get(User, user.id)
        if current is None or not current.is_usable or current.password_hash != verified_hash:
            raise invalid_credentials()  # changed while we were hashing
        if new_hash is not None:
            current.password_hash = new_hash  # bcrypt import or outdated cost: upgraded
        if current.mfa_enabled:
            if body.mfa_code is None:
                raise Unauthorized("An MFA code is required", code="mfa_required")
            await verify_mfa_code(session, security, current, body.mfa_code)
        current.last_login_at = utcnow()
        return await start_session(session, security, settings, current, client)

    return await run_committing_failures(database, complete)


PASSWORD_RESET_REQUEST = "auth.password_reset_request"


@dataclass(frozen=True, slots=True)
class PasswordResetRequest:
    """What `forgot` hands to its job: the address as typed, and where the link points."""

    email: str
    app_url: str
    ttl_seconds: int


async def request_password_reset(session: AsyncSession, settings: Settings, email: str) -> str:
    """Queue the reset mail's job whether or not the account exists; returns the job id.

    The request does the same work for every address (seal, one job row): whether an
    account exists is decided by the job, so neither the answer nor its time tells.
    """
    request = PasswordResetRequest(
        email=email,
        app_url=settings.app_url,
        ttl_seconds=settings.password_reset_ttl_seconds,
    )
    sealed = seal_job_payload(session, asdict(request), purpose=PASSWORD_RESET_REQUEST)
    job = await enqueue(session, PASSWORD_RESET_REQUEST, {"sealed": sealed})
    return str(job.id)


async def mail_password_reset(session: AsyncSession, request: PasswordResetRequest) -> None:
    """The job's half: mail a reset token when an active account has the address."""
    user = await find_user_by_email(session, request.email)
    if user is None or not user.is_usable:
        return
    token = await issue_one_time_token(
        session, user.id, TokenPurpose.PASSWORD_RESET, request.ttl_seconds
    )
    await send_auth_email(
        session,
        to=user.email,
        template="password_reset",
        context=greeting_context(user)
        | {
            "link": link_with_token(request.app_url, "/reset-password", token),
            "expires_in": duration_text(request.ttl_seconds),
        },
    )


async def issue_password_reset_token(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID
) -> str:
    return await issue_one_time_token(
        session, user_id, TokenPurpose.PASSWORD_RESET, settings.password_reset_ttl_seconds
    )


async def reset_password(
    session: AsyncSession,
    security: Security,
    revocations: Revocations,
    token: str,
    new_password: str,
) -> None:
    user_id = await consume_one_time_token(session, token, TokenPurpose.PASSWORD_RESET)
    user = await session.get(User, user_id)
    if user is None or not user.is_usable:
        raise InvalidToken()
    # Hashed only for a valid token: random tokens cannot be used to burn CPU.
    user.password_hash = await security.passwords.hash(new_password)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()  # the reset link proved the address
    await revoke_one_time_tokens(session, user.id, TokenPurpose.PASSWORD_RESET)
    await end_all_sessions(session, revocations, user, reason="password_reset")
    security_log.info(
        "password_reset", security_event="security.password_reset", user_id=str(user.id)
    )
    await send_auth_email(
        session, to=user.email, template="password_changed", context=greeting_context(user)
    )


async def change_password(
    session: AsyncSession,
    security: Security,
    revocations: Revocations,
    user: User,
    current_session_id: uuid.UUID | None,
    current_password: str,
    new_password: str,
) -> None:
    # Called with an external provider's token (no local session), every local session
    # ends and so does every token issued until now, that one included (fail closed).
    await verify_password_or_fail(security, user, current_password)
    user.password_hash = await security.passwords.hash(new_password)
    await revoke_one_time_tokens(session, user.id, TokenPurpose.PASSWORD_RESET)
    await end_all_sessions(
        session, revocations, user, reason="password_changed", keep_session_id=current_session_id
    )
    security_log.info(
        "password_changed", security_event="security.password_changed", user_id=str(user.id)
    )
    await send_auth_email(
        session, to=user.email, template="password_changed", context=greeting_context(user)
    )


async def send_verification_email(
    session: AsyncSession, settings: Settings, user: User
) -> str | None:
    token = await issue_email_verification_token(session, settings, user.id)
    return await send_auth_email(
        session,
        to=user.email,
        template="verify_email",
        context=greeting_context(user)
        | {
            "link": token_link(settings, "/verify-email", token),
            "expires_in": duration_text(settings.email_verification_ttl_seconds),
        },
    )


async def issue_email_verification_token(
    session: AsyncSession, settings: Settings, user_id: uuid.UUID
) -> str:
    return await issue_one_time_token(
        session,
        user_id,
        TokenPurpose.EMAIL_VERIFICATION,
        settings.email_verification_ttl_seconds,
    )


async def resend_verification(session: AsyncSession, settings: Settings, user: User) -> str | None:
    if user.email_verified:
        raise Conflict("The email address is already verified")
    return await send_verification_email(session, settings, user)


async def verify_email(session: AsyncSession, token: str) -> User:
    user_id = await consume_one_time_token(session, token, TokenPurpose.EMAIL_VERIFICATION)
    user = await session.get(User, user_id)
    if user is None or not user.is_usable:
        raise InvalidToken()
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    return user
