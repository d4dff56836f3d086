"""MFA endpoints: setup, enable, disable (TOTP)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status
from starlette.responses import Response

from tenantry.core.openapi import errors
from tenantry.core.responses import Envelope, ok
from tenantry.core.routing import UnitOfWorkRoute
from tenantry.modules.auth import mfa
from tenantry.modules.auth.deps import (
    AccessClaimsDep,
    ClientDep,
    CurrentUser,
    DatabaseDep,
    LocalAuthOnly,
    SecurityDep,
    SettingsDep,
)
from tenantry.modules.auth.ratelimits import hit_mfa_verification
from tenantry.modules.auth.schemas import (
    MfaDisableRequest,
    MfaEnableRequest,
    MfaSetupOut,
    RecoveryCodesOut,
)

router = APIRouter(
    prefix="/auth/mfa",
    tags=["auth"],
    route_class=UnitOfWorkRoute,
    dependencies=[LocalAuthOnly],  # AUTH_LOCAL=false: 404
)


@router.post("/setup", operation_id="auth_mfa_setup", responses=errors({409: ["conflict"]}))
async def setup(
    user: CurrentUser, security: SecurityDep, settings: SettingsDep
) -> Envelope[MfaSetupOut]:
    """Start MFA setup: a new TOTP secret and its otpauth:// URI (not active until enabled)."""
    secret, uri = await mfa.start_mfa_setup(security, settings, user)
    return ok(MfaSetupOut(secret=secret, otpauth_uri=uri))


@router.post(
    "/enable",
    operation_id="auth_mfa_enable",
    dependencies=[Depends(hit_mfa_verification)],
    responses=errors({401: ["invalid_credentials", "invalid_mfa_code"], 409: ["conflict"]}),
)
async def enable(
    body: MfaEnableRequest,
    claims: AccessClaimsDep,
    client: ClientDep,
    database: DatabaseDep,
    security: SecurityDep,
) -> Envelope[RecoveryCodesOut]:
    """Turn MFA on (password and a valid code); returns 10 recovery codes (shown once)."""
    codes = await mfa.enable_mfa_for(database, security, claims, client, body.password, body.code)
    return ok(RecoveryCodesOut(recovery_codes=codes))


@router.post(
    "/disable",
    operation_id="auth_mfa_disable",
    responses=errors({401: ["invalid_credentials", "invalid_mfa_code"], 409: ["conflict"]}),
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(hit_mfa_verification)],
)
async def disable(
    body: MfaDisableRequest,
    claims: AccessClaimsDep,
    client: ClientDep,
    database: DatabaseDep,
    security: SecurityDep,
) -> None:
    """Turn MFA off (password and a current code required)."""
    await mfa.disable_mfa_for(database, security, claims, client, body.password, body.code)
