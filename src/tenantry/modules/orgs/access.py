"""Who may act in an organization: memberships read once per request, cached.

`organization_access(cache, session, org_id, user_id)` answers the caller's role in a live
(not deleted) organization, or None. Answers are cached in `Services.cache` and dropped
on every membership, role or organization change — at once and again after the commit,
so a role change applies on the very next request. With Redis every process shares the
cache (5 minutes); the in-process cache of the embedded mode keeps answers 5 seconds,
the bound on what another `--workers` process can still see.

A miss is filled under a lease: a unique marker is `add`ed before the database read and
the answer replaces it only if the marker is still there. An invalidation that runs
between the read and the write (a member removed concurrently) deletes the marker, so
the answer read before the removal is dropped instead of being served for 5 minutes.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache, MemoryCache
from tenantry.core.routing import after_commit
from tenantry.modules.orgs.models import Membership, Organization
from tenantry.modules.plans.state import Subscription

ACCESS_TTL_SECONDS = 300
# An in-process cache is not shared by `tenantry serve --workers N`: another process keeps
# its answer until it expires, so it expires quickly.
LOCAL_ACCESS_TTL_SECONDS = 5
_PREFIX = "orgs:access:"
# A lease outlives any database read; a reader that died holding one only delays caching.
LEASE_TTL_SECONDS = 10
_LEASE_MARK = b"lease:"


@dataclass(frozen=True, slots=True)
class Access:
    role: str
    subscription: Subscription

    @property
    def plan(self) -> str:
        return self.subscription.plan


def _key(org_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return f"{_PREFIX}{org_id}:{user_id}"


def access_cache_key(org_id: uuid.UUID, user_id: uuid.UUID) -> str:
    """The cache key of a membership, for callers fetching it with other keys at once."""
    return _key(org_id, user_id)


async def organization_access(
    cache: Cache,
    session: AsyncSession,
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    prefetched: tuple[bytes | None] | None = None,
) -> Access | None:
    """The caller's role and plan in `org_id` (None: not a member), cached until changed.

    `prefetched` holds the raw cache value already read under `access_cache_key`.
    """
    key = _key(org_id, user_id)
    raw = prefetched[0] if prefetched is not None else await cache.get(key)
    if raw is not None and not raw.startswith(_LEASE_MARK):
        return _cached_access(raw)
    lease = _LEASE_MARK + secrets.token_hex(16).encode()
    # Another reader's lease (or a lost race for ours): read, answer, don't cache.
    leased = raw is None and await cache.add(key, lease, ttl=LEASE_TTL_SECONDS)
    access = await _read_access(session, org_id, user_id)
    if leased:
        value: dict[str, object] = (
            {"role": access.role, "subscription": access.subscription.to_json()}
            if access
            else {"role": None}
        )
        ttl = LOCAL_ACCESS_TTL_SECONDS if isinstance(cache, MemoryCache) else ACCESS_TTL_SECONDS
        await cache.replace_if(key, lease, orjson.dumps(value), ttl=ttl)
    return access


def _cached_access(raw: bytes) -> Access | None:
    cached = orjson.loads(raw)
    if isinstance(cached, dict):
        role, subscription = cached.get("role"), cached.get("subscription")
        if role and isinstance(subscription, dict):
            return Access(role=role, subscription=Subscription.from_json(subscription))
    return None


async def _read_access(
    session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID
) -> Access | None:
    row = (
        await session.execute(
            select(
                Membership.role,
                Organization.plan,
                Organization.subscription_status,
                Organization.trial_ends_at,
                Organization.plan_overrides,
                Organization.suspended_at,
            )
            .join(Organization, Organization.id == Membership.organization_id)
            .where(
                Membership.organization_id == org_id,
                Membership.user_id == user_id,
                Organization.deleted_at.is_(None),
            )
        )
    ).first()
    return (
        Access(
            role=row[0],
            subscription=Subscription(
                plan=row[1],
                status=row[2],
                trial_ends_at=row[3],
                overrides=row[4],
                suspended=row[5] is not None,
            ),
        )
        if row is not None
        else None
    )


async def forget_member(
    cache: Cache, session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Drop one cached answer now and once more after the commit."""
    key = _key(org_id, user_id)
    await cache.delete(key)

    async def again() -> None:
        await cache.delete(key)

    after_commit(session, again)


async def forget_organization(cache: Cache, session: AsyncSession, org_id: uuid.UUID) -> None:
    """Drop every cached answer about an organization now and after the commit."""
    prefix = f"{_PREFIX}{org_id}:"
    await cache.delete_prefix(prefix)

    async def again() -> None:
        await cache.delete_prefix(prefix)

    after_commit(session, again)
