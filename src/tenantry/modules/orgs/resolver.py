"""The tenant resolver (`app.state.tenant_resolver`): principal + membership → TenantContext.

Runs once per request for every route under `/orgs/{orgId}/` (core/authz.py calls it on
a session already bound to `orgId`). The principal is

- an API key, sent as `X-API-Key: tnt_...` or `Authorization: Bearer tnt_...` (never a
  query parameter): looked up in this organization only; a key of another organization
  is simply not found here → 404; revoked or expired → 401, and so is a key whose
  creator can no longer act (deactivated, deleted, erased: read with the key, from the
  database) or is no longer a member (the cached membership, dropped on every change).
  It acts with its own permissions, narrowed to what its creator's role holds now, and
  as its creator (user id);
- otherwise a user's access token (JWT): verified and checked for revocation like
  `AccessClaimsDep` (the session's cached fact; the database when the cache has none),
  then the membership is read (cached, see access.py).
  Permissions always come from the membership's role, never from the token.

No credentials → 401. Not a member, unknown or deleted organization → the same 404.
Then the plan's gate (modules/plans/enforce.py): suspended 403, expired trial 402 on
writes, API rate 429.
"""

from __future__ import annotations

import uuid

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache
from tenantry.core.errors import NotFound, Unauthorized
from tenantry.core.permissions import covers, role_permissions
from tenantry.core.tenancy import TenantContext
from tenantry.modules.api_keys import service as api_keys
from tenantry.modules.audit.service import remember_request
from tenantry.modules.auth.deps import access_claims_fetching
from tenantry.modules.orgs.access import access_cache_key, organization_access
from tenantry.modules.plans.enforce import check_access

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


async def resolve_tenant(
    request: Request, session: AsyncSession, org_id: uuid.UUID
) -> TenantContext:
    remember_request(session, request)
    cache: Cache = request.app.state.cache
    raw_key = presented_api_key(request)
    if raw_key is not None:
        return await _api_key_context(request, session, cache, org_id, raw_key)
    # The hot path: the token is verified and checked against the session's cached fact
    # (logout, password change, deactivation; the database on a miss), the cached
    # membership read in the same round trip.
    claims, prefetched = await access_claims_fetching(
        request.app.state.security,
        request.app.state.revocations,
        _bearer(request),
        lambda claims: [access_cache_key(org_id, claims.user_id)],
    )
    user_id = claims.user_id
    access = await organization_access(cache, session, org_id, user_id, prefetched=(prefetched[0],))
    if access is None:
        raise NotFound(ORG_NOT_FOUND)
    await check_access(request, org_id, access.subscription, user_id)
    return TenantContext(
        organization_id=org_id,
        user_id=user_id,
        role=access.role,
        permissions=role_permissions(access.role),
        plan=access.plan,
    )


async def _api_key_context(
    request: Request, session: AsyncSession, cache: Cache, org_id: uuid.UUID, raw: str
) -> TenantContext:
    key = await api_keys.authenticate(session, raw)
    if key is None:
        raise NotFound(ORG_NOT_FOUND)
    creator = (
        await organization_access(cache, session, org_id, key.created_by)
        if key.created_by is not None
        else None
    )
    if creator is None:  # the creator left, or the organization was deleted: the key is dead
        raise Unauthorized("The API key has been revoked")
    await check_access(request, org_id, creator.subscription, key.created_by)
    held = role_permissions(creator.role)
    permissions = frozenset(p for p in key.permissions if covers(held, [p]))
    await api_keys.touch(session, cache, request.app.state.database, key)
    return TenantContext(
        organization_id=org_id,
        user_id=key.created_by,
        api_key_id=key.id,
        role=creator.role,
        permissions=permissions,
        plan=creator.plan,
    )
