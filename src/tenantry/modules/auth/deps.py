"""Who is calling: typed dependencies every feature router uses.

- `AccessClaimsDep` — the verified access-token claims (signature, expiry, revocation:
  the cached session fact, the database when the cache has none — revocation.py). For
  hot paths that only need the user id.
- `CurrentUser` — the calling `User`, loaded in the request session together with its
  session row, so a revoked session or a deactivated user is refused even without cache.
- `require_platform_role(PlatformRole.ADMIN)` — a dependency returning the user when its
  platform role is at least the one named (403 otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.errors import Forbidden, NotFound, Unauthorized
from tenantry.core.openapi import BEARER, declare
from tenantry.core.ratelimit import client_ip
from tenantry.core.routing import SessionDep, get_database
from tenantry.core.security import AccessClaims, InvalidAccessToken, Security
from tenantry.modules.auth.external import ExternalIssuers
from tenantry.modules.auth.models import AuthSession
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.users.models import PlatformRole, User
from tenantry.services import services_of

_bearer = HTTPBearer(
    auto_error=False, scheme_name=BEARER, description="Access token from /auth/login"
)
USER_AGENT_MAX = 512


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_security(request: Request) -> Security:
    return services_of(request).security


async def get_revocations(request: Request) -> Revocations:
    return services_of(request).revocations


async def get_external_issuers(request: Request) -> ExternalIssuers:
    return services_of(request).external


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_local_auth(settings: SettingsDep) -> None:
    """404 on the local register/login/password/MFA endpoints when `AUTH_LOCAL=false`."""
    if not settings.auth_local:
        raise NotFound()


LocalAuthOnly = Depends(require_local_auth)
SecurityDep = Annotated[Security, Depends(get_security)]
RevocationsDep = Annotated[Revocations, Depends(get_revocations)]
ExternalIssuersDep = Annotated[ExternalIssuers, Depends(get_external_issuers)]
DatabaseDep = Annotated[Database, Depends(get_database)]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str | None
    user_agent: str | None


async def get_client_info(request: Request) -> ClientInfo:
    user_agent = request.headers.get("user-agent")
    return ClientInfo(
        ip=client_ip(request), user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None
    )


ClientDep = Annotated[ClientInfo, Depends(get_client_info)]


async def get_access_claims(
    security: SecurityDep,
    revocations: RevocationsDep,
    external: ExternalIssuersDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccessClaims:
    claims, _ = await access_claims_fetching(
        security, revocations, external, credentials, lambda _c: []
    )
    return claims


async def access_claims_fetching(
    security: Security,
    revocations: Revocations,
    external: ExternalIssuers,
    credentials: HTTPAuthorizationCredentials | None,
    keys: Callable[[AccessClaims], list[str]],
) -> tuple[AccessClaims, list[bytes | None]]:
    """The verified, unrevoked claims, and the cache values of `keys(claims)` read with the
    revocation facts (one round trip for the whole authentication of a warm tenant request;
    a session whose fact the cache lacks is looked up in the database).

    A token whose `iss` is a configured external issuer is verified against that issuer's
    keys and mapped to its linked user (modules/identity); any other goes to the local
    verifier, which accepts only our own tokens."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    provider = external.provider_of(credentials.credentials)
    if provider is not None:
        claims = await external.authenticate(provider, credentials.credentials)
        _, values = await revocations.check(claims, keys(claims))
        return claims, values
    try:
        claims = security.tokens.verify(credentials.credentials)
    except InvalidAccessToken as exc:
        if exc.expired:
            raise Unauthorized("The access token has expired", code="token_expired") from None
        raise Unauthorized("The access token is invalid") from None
    revoked, values = await revocations.check(claims, keys(claims))
    if revoked:
        raise Unauthorized("The session has ended; sign in again")
    return claims, values


AccessClaimsDep = Annotated[AccessClaims, Depends(get_access_claims)]


async def load_principal(session: AsyncSession, claims: AccessClaims) -> User:
    """The user behind `claims`, refused when its session, account or tokens were revoked."""
    if claims.session_id is None:  # an external provider's token: no local session
        user = await session.get(User, claims.user_id)
        valid_after = user.sessions_valid_after if user is not None else None
        if (
            user is None
            or not user.is_usable
            or (valid_after is not None and claims.issued_at < valid_after.timestamp())
        ):
            raise Unauthorized("The session has ended; sign in again")
        return user
    row = (
        await session.execute(
            select(User, AuthSession.revoked_at)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.user_id, AuthSession.id == claims.session_id)
        )
    ).first()
    if row is None:
        raise Unauthorized("The session has ended; sign in again")
    user, session_revoked_at = row
    valid_after = user.sessions_valid_after
    if (
        session_revoked_at is not None
        or not user.is_usable
        or (valid_after is not None and claims.issued_at < valid_after.timestamp())
    ):
        raise Unauthorized("The session has ended; sign in again")
    return user


async def get_current_user(claims: AccessClaimsDep, session: SessionDep) -> User:
    return await load_principal(session, claims)


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_platform_role(minimum: PlatformRole | str) -> Callable[..., Awaitable[User]]:
    """Dependency factory: the current user when its platform role ranks at least `minimum`."""
    needed = PlatformRole(minimum)

    async def dependency(user: CurrentUser) -> User:
        if not user.platform_role.at_least(needed):
            raise Forbidden()
        return user

    return declare(dependency, errors={403: ["forbidden"]})


PlatformAdmin = Annotated[User, Depends(require_platform_role(PlatformRole.ADMIN))]
