"""External principals: a verified provider token → the tenantry user it speaks for.

`ExternalAuth` (one per app, `Services.external`) knows the configured providers, their
keys (keys.py) and turns a token into the same `AccessClaims` a local access token gives,
so the tenant gate, memberships, permissions, plans, rate limits and audit treat both alike.

The user is the one linked to `(provider, sub)` in `identities`. On the subject's first
token the link is made, just in time:
- no account has the token's email → a new account (no local password; `emailVerified`
  from the provider's claim; without an email claim, a placeholder address);
- an account has it → linked only when the provider asserts `email_verified`; otherwise
  409 `conflict` (whoever controls an unverified address at the provider must not take over
  the local account holding it).
On every request the database is the authority on the account (one indexed read, like an
API key's creator): deactivated, deleted or erased → 401 whatever the token says; a token
issued before the user's "sign out everywhere" moment → 401.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import AuthProvider, Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.errors import Conflict, Unauthorized
from tenantry.core.security import AccessClaims, InvalidAccessToken
from tenantry.modules.identity.keys import IssuerKeys, MonotonicClock
from tenantry.modules.identity.models import Identity
from tenantry.modules.identity.tokens import (
    ExternalClaims,
    unverified_issuer,
    verify_external_token,
)
from tenantry.modules.users import service as users
from tenantry.modules.users.models import User

REFUSED = "This account cannot sign in"
UNVERIFIED_COLLISION = (
    "An account with this email already exists and the identity provider has not verified "
    "the email: sign in with that account, or verify the email at the provider"
)


class ExternalAuth:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        http: httpx.AsyncClient | None = None,
        clock: MonotonicClock | None = None,
    ) -> None:
        self.providers = tuple(settings.auth_providers)
        self.clock = clock or MonotonicClock()
        self._database = database
        self._http = http or httpx.AsyncClient(follow_redirects=False)
        self._by_issuer = {p.issuer: p for p in self.providers}
        self._by_name = {p.name: p for p in self.providers}
        self._leeway = float(settings.auth_clock_leeway_seconds)
        self.keys = {
            p.name: IssuerKeys(
                p, self._http, ttl_seconds=settings.auth_jwks_ttl_seconds, clock=self.clock
            )
            for p in self.providers
        }

    def provider(self, name: str) -> AuthProvider | None:
        return self._by_name.get(name)

    def provider_of(self, token: str) -> AuthProvider | None:
        """The configured provider whose issuer `token` claims, if any (local tokens: None)."""
        if not self._by_issuer:
            return None
        issuer = unverified_issuer(token)
        return self._by_issuer.get(issuer) if issuer is not None else None

    async def authenticate(self, provider: AuthProvider, token: str) -> AccessClaims:
        """Verify `token` and return the claims of the user it is linked to (401/409)."""
        try:
            claims = await verify_external_token(
                provider, self.keys[provider.name], token, leeway=self._leeway
            )
        except InvalidAccessToken as exc:
            if exc.expired:
                raise Unauthorized("The access token has expired", code="token_expired") from None
            raise Unauthorized("The access token is invalid") from None
        user_id, role = await self._linked_user(claims)
        return AccessClaims(
            user_id=user_id,
            session_id=None,
            role=role,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            token_id=claims.token_id,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _linked_user(self, claims: ExternalClaims) -> tuple[uuid.UUID, str]:
        async with self._database.session(write=False) as session:
            found = await _find_linked(session, claims)
        if found is None:
            refusal: Conflict | None = None
            try:
                async with self._database.transaction() as session:
                    await _link(session, claims)
            except IntegrityError:
                pass  # a concurrent first request linked it: read what it wrote
            except Conflict as exc:
                refusal = exc  # unless the account holding the email is ours by now
            async with self._database.session(write=False) as session:
                found = await _find_linked(session, claims)
            if found is None:
                raise refusal or Unauthorized(REFUSED)
        user, valid_after = found
        if valid_after is not None and claims.issued_at < valid_after.timestamp():
            raise Unauthorized("The session has ended; sign in again")
        return user


async def _find_linked(
    session: AsyncSession, claims: ExternalClaims
) -> tuple[tuple[uuid.UUID, str], dt.datetime | None] | None:
    row = (
        await session.execute(
            select(User.id, User.role, User.is_active, User.deleted_at, User.sessions_valid_after)
            .join(Identity, Identity.user_id == User.id)
            .where(Identity.provider == claims.provider, Identity.subject == claims.subject)
        )
    ).first()
    if row is None:
        return None
    if not row.is_active or row.deleted_at is not None:
        raise Unauthorized(REFUSED)
    return (row.id, row.role), row.sessions_valid_after


async def _link(session: AsyncSession, claims: ExternalClaims) -> None:
    linked = await session.scalar(
        select(Identity.id).where(
            Identity.provider == claims.provider, Identity.subject == claims.subject
        )
    )
    if linked is not None:  # a concurrent first request made it since our read
        return
    email = claims.email or _placeholder_email(claims)
    user = await users.find_user_by_email(session, email, include_deleted=True)
    if user is None:
        user = await users.create_external_user(
            session,
            email=email,
            first_name=claims.first_name,
            last_name=claims.last_name,
            email_verified=claims.email is not None and claims.email_verified,
        )
    elif not claims.email_verified or claims.email is None:
        raise Conflict(UNVERIFIED_COLLISION)
    elif not user.is_usable:
        raise Unauthorized(REFUSED)
    elif user.email_verified_at is None:
        user.email_verified_at = utcnow()  # the provider vouches for the address
    session.add(Identity(user_id=user.id, provider=claims.provider, subject=claims.subject))
    await session.flush()


def _placeholder_email(claims: ExternalClaims) -> str:
    """An address nobody can own, for a provider that sends no email claim."""
    digest = hashlib.sha256(f"{claims.provider}\x00{claims.subject}".encode()).hexdigest()
    return f"{claims.provider}-{digest[:32]}@identity.invalid"
