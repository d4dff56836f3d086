"""The tenant gate: principal → membership → plan → API rate → usage, one TenantContext.

`OrgGate` is built by create_app with the services it needs (no lookups on the request's
app) and runs once per request for every route under `/orgs/{orgId}/` (core/authz.py
calls it on a session already bound to `orgId`). Its steps, in order:

1. principal (`_token_principal` / `_api_key_context`);
2. membership (`organization_access`: in process on a warm request, see core/nearcache.py);
3. plan (`check_plan`): suspended 403, expired trial 402 on writes;
4. API rate (`PlanRate.hit`, in process, shared through Redis once a second): 429;
5. usage (`UsageStore.request`, in process, sent to Redis once a second).

A warm request makes no Redis and no database round trip for any of them. The principal is

- an API key, sent as `X-API-Key: tnt_...` or `Authorization: Bearer tnt_...` (never a
  query parameter): looked up in this organization only; a key of another organization
  is simply not found here → 404; revoked or expired → 401, and so is a key whose
  creator can no longer act (deactivated, deleted, erased: read with the key, from the
  database) or is no longer a member (the cached membership, dropped on every change).
  It acts with its own permissions, narrowed to what its creator's role holds now, and
  as its creator (user id);
- otherwise a user's access token (JWT): verified and checked for revocation like
  `AccessClaimsDep` (the session's cached fact; the database when the cache has none),
  then the membership is read (cached, see access.py). A token of a configured external
  issuer (modules/identity) is verified against that issuer's JWKS and stands for its
  linked user, whose account is read from the database on each use; from there on it is
  the same path (membership, permissions, plan, rate, usage, audit's actorUserId).
  Permissions always come from the membership's role, never from the token.

No credentials → 401. Not a member, unknown or deleted organization → the same 404.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.authz import Principal
from tenantry.core.cache import Cache
from tenantry.core.db import Clock, Database
from tenantry.core.errors import NotFound, Unauthorized
from tenantry.core.permissions import covers, role_permissions
from tenantry.core.security import AccessClaims, InvalidAccessToken, Security
from tenantry.core.tenancy import TenantContext
from tenantry.modules.api_keys import service as api_keys
from tenantry.modules.audit.service import remember_request
from tenantry.modules.auth.deps import access_claims_fetching
from tenantry.modules.auth.external import ExternalIssuers
from tenantry.modules.auth.revocation import Revocations
from tenantry.modules.orgs.access import Access, access_cache_key, organization_access
from tenantry.modules.plans.apirate import PlanRate
from tenantry.modules.plans.counters import UsageStore
from tenantry.modules.plans.enforce import check_plan

ORG_NOT_FOUND = "Organization not found"


def presented_api_key(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    if header is not None:
        return header.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and api_keys.looks_like_key(value):
        return value
    return None


def _bearer(request: Request) -> HTTPAuthorizationCredentials | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if not scheme or not value.strip():
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=value.strip())


@dataclass(frozen=True, slots=True, eq=False)
class OrgGate:
    """The app's `TenantGate` (core/authz.py), wired explicitly by create_app."""

    security: Security
    revocations: Revocations
    external: ExternalIssuers  # tokens of external OIDC issuers (modules/identity)
    cache: Cache
    database: Database
    plan_rate: PlanRate
    usage: UsageStore
    clock: Clock  # the services' clock (tests move it)

    async def __call__(
        self, request: Request, session: AsyncSession, org_id: uuid.UUID
    ) -> TenantContext:
        remember_request(session, request)
        raw_key = presented_api_key(request)
        if raw_key is not None:
            return await self._api_key_context(request, session, org_id, raw_key)
        user_id, access = await self._token_principal(request, session, org_id)
        await self._admit(request, org_id, access, user_id)
        return TenantContext(
            organization_id=org_id,
            user_id=user_id,
            role=access.role,
            permissions=role_permissions(access.role),
            plan=access.plan,
            subscription=access.subscription,
        )

    def principal_of(self, request: Request, context: TenantContext) -> Principal:
        if context.api_key_id is not None:
            return Principal(user_id=context.user_id, api_key_id=context.api_key_id)
        bearer = _bearer(request)
        if bearer is None:  # the gate let this request through: it had a token
            raise Unauthorized()
        token = bearer.credentials
        if self.external.provider_of(token) is not None:
            # Verified by the gate a moment ago in this request (its issuer's keys): only
            # its issue time is read again. No local session: `confirm` asks the account.
            issued_at = jwt.decode(token, options={"verify_signature": False}).get("iat")
            return Principal(user_id=context.user_id, issued_at=float(issued_at or 0))
        try:
            claims = self.security.tokens.verify(token)
        except InvalidAccessToken:  # expired since the gate read it, a moment ago
            raise Unauthorized("The access token is invalid") from None
        return Principal(
            user_id=claims.user_id, session_id=claims.session_id, issued_at=claims.issued_at
        )

    async def confirm(
        self, session: AsyncSession, org_id: uuid.UUID, principal: Principal
    ) -> TenantContext:
        if principal.api_key_id is not None:
            key = await api_keys.authenticate_id(session, principal.api_key_id)
            context, _creator = await self._key_context(
                session, org_id, key.id, key.created_by, key.permissions
            )
            return context
        if principal.user_id is None:
            raise Unauthorized()
        if principal.session_id is None:  # an external provider's token
            revoked = await self.revocations.account_revoked(principal.user_id, principal.issued_at)
        else:
            claims = AccessClaims(
                user_id=principal.user_id,
                session_id=principal.session_id,
                role="",
                issued_at=principal.issued_at,
                expires_at=0.0,
                token_id="",
            )
            revoked, _ = await self.revocations.check(claims, [])
        if revoked:
            raise Unauthorized("The session has ended; sign in again")
        access = await organization_access(self.cache, session, org_id, principal.user_id)
        if access is None:
            raise NotFound(ORG_NOT_FOUND)
        return TenantContext(
            organization_id=org_id,
            user_id=principal.user_id,
            role=access.role,
            permissions=role_permissions(access.role),
            plan=access.plan,
            subscription=access.subscription,
        )

    async def _token_principal(
        self, request: Request, session: AsyncSession, org_id: uuid.UUID
    ) -> tuple[uuid.UUID, Access]:
        # The token is verified and checked against the session's cached fact (logout,
        # password change, deactivation; the database on a miss), the cached membership
        # read with it: on a warm request all three come from process memory.
        claims, prefetched = await access_claims_fetching(
            self.security,
            self.revocations,
            self.external,
            _bearer(request),
            lambda claims: [access_cache_key(org_id, claims.user_id)],
        )
        access = await organization_access(
            self.cache, session, org_id, claims.user_id, prefetched=(prefetched[0],)
        )
        if access is None:
            raise NotFound(ORG_NOT_FOUND)
        return claims.user_id, access

    async def _admit(
        self, request: Request, org_id: uuid.UUID, access: Access, user_id: uuid.UUID | None
    ) -> None:
        """Plan state, then the API rate, then usage: every step in process memory."""
        at = self.clock.now()
        await self.usage.request(org_id, at.date(), user_id)
        subscription = access.subscription
        check_plan(request, org_id, subscription, at)
        per_minute = subscription.terms.limits.get("apiRequestsPerMinute")
        if per_minute is not None:
            self.plan_rate.hit(org_id, per_minute)

    async def _api_key_context(
        self, request: Request, session: AsyncSession, org_id: uuid.UUID, raw: str
    ) -> TenantContext:
        key = await api_keys.authenticate(session, raw)
        if key is None:
            raise NotFound(ORG_NOT_FOUND)
        context, creator = await self._key_context(
            session, org_id, key.id, key.created_by, key.permissions
        )
        await self._admit(request, org_id, creator, key.created_by)
        await api_keys.touch(session, self.cache, self.database, key)
        return context

    async def _key_context(
        self,
        session: AsyncSession,
        org_id: uuid.UUID,
        key_id: uuid.UUID,
        created_by: uuid.UUID | None,
        key_permissions: Iterable[str],
    ) -> tuple[TenantContext, Access]:
        """The key's context: its permissions narrowed to what its creator's role holds now."""
        creator = (
            await organization_access(self.cache, session, org_id, created_by)
            if created_by is not None
            else None
        )
        if creator is None:  # the creator left, or the organization was deleted: dead key
            raise Unauthorized("The API key has been revoked")
        held = role_permissions(creator.role)
        permissions = frozenset(p for p in key_permissions if covers(held, [p]))
        context = TenantContext(
            organization_id=org_id,
            user_id=created_by,
            api_key_id=key_id,
            role=creator.role,
            permissions=permissions,
            plan=creator.plan,
            subscription=creator.subscription,
        )
        return context, creator
