"""MFA endpoints: setup, enable, disable (TOTP)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from tenantry.core.responses import Envelope, ok
from tenantry.core.routing import UnitOfWorkRoute
from tenantry.modules.auth import mfa
from tenantry.modules.auth.deps import (
    AccessClaimsDep,
    CurrentUser,
    DatabaseDep,
    SecurityDep,
    SettingsDep,
    load_principal,
)
from tenantry.modules.auth.ratelimits import hit_mfa_verification
from tenantry.modules.auth.schemas import (
    MfaCodeRequest,
    MfaDisableRequest,
    MfaSetupOut,
    RecoveryCodesOut,
)
from tenantry.modules.auth.service import verify_password_or_fail
from tenantry.modules.auth.transaction import run_committing_failures

router = APIRouter(prefix="/auth/mfa", tags=["auth"], route_class=UnitOfWorkRoute)


@router.post("/setup")
async def setup(
    user: CurrentUser, security: SecurityDep, settings: SettingsDep
) -> Envelope[MfaSetupOut]:
    """Start MFA setup: a new TOTP secret and its otpauth:// URI (not active until enabled)."""
    secret, uri = await mfa.start_mfa_setup(security, settings, user)
    return ok(MfaSetupOut(secret=secret, otpauth_uri=uri))


@router.post("/enable", dependencies=[Depends(hit_mfa_verification)])
async def enable(
    body: MfaCodeRequest, claims: AccessClaimsDep, database: DatabaseDep, security: SecurityDep
) -> Envelope[RecoveryCodesOut]:
    """Turn MFA on with a valid code; returns 10 single-use recovery codes (shown once)."""

    async def work(session: AsyncSession) -> list[str]:
        user = await load_principal(session, claims)
        return await mfa.enable_mfa(session, security, user, body.code)

    codes = await run_committing_failures(database, work)
    return ok(RecoveryCodesOut(recovery_codes=codes))


@router.post(
    "/disable",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(hit_mfa_verification)],
)
async def disable(
    body: MfaDisableRequest, claims: AccessClaimsDep, database: DatabaseDep, security: SecurityDep
) -> None:
    """Turn MFA off (password and a current code required)."""

    async def work(session: AsyncSession) -> None:
        user = await load_principal(session, claims)
        await verify_password_or_fail(security, user, body.password)
        await mfa.disable_mfa(session, security, user, body.code)

    await run_committing_failures(database, work)
