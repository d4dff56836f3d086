"""Auth endpoints (API.md, section Auth): accounts, tokens, sessions, password flows."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request, status
from starlette.responses import Response

from tenantry.core.db import new_id
from tenantry.core.openapi import errors
from tenantry.core.responses import Envelope, JobAccepted, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.security import AccessClaims
from tenantry.modules.auth import service
from tenantry.modules.auth.deps import (
    AccessClaimsDep,
    ClientDep,
    CurrentUser,
    DatabaseDep,
    LocalAuthOnly,
    RevocationsDep,
    SecurityDep,
    SettingsDep,
)
from tenantry.modules.auth.models import AuthSession
from tenantry.modules.auth.ratelimits import (
    forget_login_failures,
    hit_login_per_account,
    hit_login_per_email,
    hit_mfa_verification,
    limit_login_per_ip,
    limit_per_ip,
)
from tenantry.modules.auth.schemas import (
    AuthResult,
    ChangePasswordRequest,
    ForgotPasswordRequest,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    SessionOut,
    VerifyEmailRequest,
)
from tenantry.modules.auth.sessions import (
    IssuedTokens,
    active_sessions,
    end_all_sessions,
    revoke_by_refresh_token,
    revoke_session_of_user,
    rotate_refresh_token,
)
from tenantry.modules.auth.transaction import run_committing_failures
from tenantry.modules.users.schemas import UserOut

router = APIRouter(prefix="/auth", tags=["auth"], route_class=UnitOfWorkRoute)
NO_CONTENT = status.HTTP_204_NO_CONTENT


def _result(issued: IssuedTokens) -> Envelope[AuthResult]:
    return ok(
        AuthResult(
            user=UserOut.model_validate(issued.user),
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            expires_in=issued.expires_in,
        )
    )


def _accepted(job_id: str | None) -> Envelope[JobAccepted]:
    # No account, no job: a fresh time-ordered id like a real job's, so nothing tells.
    return ok(JobAccepted(job_id=job_id or str(new_id())))


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[LocalAuthOnly, Depends(limit_per_ip("register"))],
    responses=errors({409: ["conflict"]}),
)
async def register(
    body: RegisterRequest,
    session: SessionDep,
    security: SecurityDep,
    settings: SettingsDep,
    client: ClientDep,
) -> Envelope[AuthResult]:
    """Create an account and sign in."""
    return _result(await service.register(session, security, settings, body, client))


@router.post(
    "/login",
    dependencies=[LocalAuthOnly, Depends(limit_login_per_ip)],
    responses=errors(
        {
            401: ["invalid_credentials", "mfa_required", "invalid_mfa_code"],
            429: ["rate_limited"],
        }
    ),
)
async def login(
    request: Request,
    body: LoginRequest,
    database: DatabaseDep,
    security: SecurityDep,
    settings: SettingsDep,
    client: ClientDep,
) -> Envelope[AuthResult]:
    """Sign in with email and password (and an MFA code when MFA is on)."""
    await hit_login_per_email(request, body.email)
    await hit_login_per_account(request, body.email)
    if body.mfa_code is not None:
        await hit_mfa_verification(request)
    issued = await service.login(
        database, security, settings, body, client, abandoned=request.is_disconnected
    )
    await forget_login_failures(request, body.email)
    return _result(issued)


@router.post("/refresh", responses=errors({401: ["unauthorized"]}))
async def refresh(
    body: RefreshRequest,
    database: DatabaseDep,
    security: SecurityDep,
    settings: SettingsDep,
    revocations: RevocationsDep,
    client: ClientDep,
) -> Envelope[AuthResult]:
    """Exchange a refresh token for a new pair (the old one is revoked)."""
    grace = settings.refresh_reuse_grace_seconds
    issued = await run_committing_failures(
        database,
        lambda s: rotate_refresh_token(
            s, security, revocations, body.refresh_token, client, reuse_grace_seconds=grace
        ),
    )
    return _result(issued)


@router.post("/logout", status_code=NO_CONTENT, response_class=Response)
async def logout(body: RefreshRequest, session: SessionDep, revocations: RevocationsDep) -> None:
    """End the session of a refresh token (idempotent)."""
    await revoke_by_refresh_token(session, revocations, body.refresh_token)


@router.post("/logout-all", status_code=NO_CONTENT, response_class=Response)
async def logout_all(user: CurrentUser, session: SessionDep, revocations: RevocationsDep) -> None:
    """End every session; access tokens issued before now stop working."""
    await end_all_sessions(session, revocations, user, reason="logout_all")


@router.get("/sessions")
async def list_sessions(
    user: CurrentUser, claims: AccessClaimsDep, session: SessionDep
) -> Envelope[list[SessionOut]]:
    """The caller's active sessions."""
    sessions = await active_sessions(session, user.id)
    return ok([_session_out(s, claims) for s in sessions])


def _session_out(auth_session: AuthSession, claims: AccessClaims) -> SessionOut:
    return SessionOut(
        id=auth_session.id,
        user_agent=auth_session.user_agent,
        ip=auth_session.ip,
        created_at=auth_session.created_at,
        last_used_at=auth_session.last_used_at,
        current=auth_session.id == claims.session_id,
    )


@router.delete("/sessions/{session_id}", status_code=NO_CONTENT, response_class=Response)
async def revoke_session(
    session_id: uuid.UUID, user: CurrentUser, session: SessionDep, revocations: RevocationsDep
) -> None:
    """Revoke one of the caller's sessions."""
    await revoke_session_of_user(session, revocations, user.id, session_id)


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[LocalAuthOnly, Depends(limit_per_ip("forgot"))],
)
async def forgot_password(
    body: ForgotPasswordRequest, session: SessionDep, settings: SettingsDep
) -> Envelope[JobAccepted]:
    """Mail a password-reset link when the account exists (the answer is the same if not)."""
    return _accepted(await service.request_password_reset(session, settings, body.email))


@router.post(
    "/password/reset",
    status_code=NO_CONTENT,
    response_class=Response,
    dependencies=[LocalAuthOnly],
    responses=errors({400: ["invalid_token"]}),
)
async def reset_password(
    body: ResetPasswordRequest,
    session: SessionDep,
    security: SecurityDep,
    revocations: RevocationsDep,
) -> None:
    """Set a new password with a mailed token; every session ends."""
    await service.reset_password(session, security, revocations, body.token, body.password)


@router.post(
    "/password/change",
    status_code=NO_CONTENT,
    response_class=Response,
    dependencies=[LocalAuthOnly],
    responses=errors({401: ["invalid_credentials"]}),
)
async def change_password(
    body: ChangePasswordRequest,
    user: CurrentUser,
    claims: AccessClaimsDep,
    session: SessionDep,
    security: SecurityDep,
    revocations: RevocationsDep,
) -> None:
    """Change the password (current one required); other sessions end."""
    await service.change_password(
        session,
        security,
        revocations,
        user,
        claims.session_id,
        body.current_password,
        body.new_password,
    )


@router.post("/email/verify", responses=errors({400: ["invalid_token"]}))
async def verify_email(body: VerifyEmailRequest, session: SessionDep) -> Envelope[UserOut]:
    """Confirm the email address with the mailed token."""
    return ok(UserOut.model_validate(await service.verify_email(session, body.token)))


@router.post(
    "/email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(limit_per_ip("resend"))],
    responses=errors({409: ["conflict"]}),
)
async def resend_verification(
    user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Envelope[JobAccepted]:
    """Mail a new verification link."""
    return _accepted(await service.resend_verification(session, settings, user))
