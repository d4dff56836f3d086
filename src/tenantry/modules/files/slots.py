"""How many uploads one user and one organization may have in flight (429 beyond).

An upload holds a socket, a coroutine and a storage stream for as long as its body takes
to arrive (bounded by the body deadline, core/middleware.py); the caps keep one user or
one organization from holding hundreds of them. `UploadSlots.hold(user, org)` takes a
slot on both counters or raises `RateLimited`, and gives both back when the upload ends.

Without Redis the counters live in the process (each `serve` worker counts its own).
With Redis they are shared by every process: a sorted set per counter, one member per
upload whose score is its lease's end, so the slots of a process that died free
themselves once `lease_seconds` have passed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.config import Settings
from tenantry.core.errors import RateLimited, ServiceUnavailable

# The client cannot know when another upload ends; a few seconds is a fair first wait.
RETRY_AFTER_SECONDS = 5
# A lease outlives the longest body read by this much (storage and database work after it).
LEASE_MARGIN_SECONDS = 120

# KEYS: the counters; ARGV[1]: the upload's id, ARGV[2]: lease ms, ARGV[3..]: the caps.
# All or nothing: a slot is taken on every counter, or on none.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
        return 0
    end
end
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
end
return 1
"""


@dataclass(frozen=True)
class UploadCaps:
    per_user: int
    per_org: int


def _refused(scope: str) -> RateLimited:
    return RateLimited(
        RETRY_AFTER_SECONDS, f"Too many uploads in progress for this {scope}; try again shortly"
    )


class UploadSlots:
    """In-process counters (one `serve` worker)."""

    def __init__(self, caps: UploadCaps) -> None:
        self.caps = caps
        self._users: dict[uuid.UUID, int] = {}
        self._orgs: dict[uuid.UUID, int] = {}

    @asynccontextmanager
    async def hold(self, user_id: uuid.UUID, org_id: uuid.UUID) -> AsyncIterator[None]:
        # No await between the checks and the increments: one event loop, no race.
        if self._users.get(user_id, 0) >= self.caps.per_user:
            raise _refused("user")
        if self._orgs.get(org_id, 0) >= self.caps.per_org:
            raise _refused("organization")
        self._users[user_id] = self._users.get(user_id, 0) + 1
        self._orgs[org_id] = self._orgs.get(org_id, 0) + 1
        try:
            yield
        finally:
            _decrement(self._users, user_id)
            _decrement(self._orgs, org_id)


def _decrement(counts: dict[uuid.UUID, int], key: uuid.UUID) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class RedisUploadSlots(UploadSlots):
    """Counters shared by every process through Redis, each slot a lease."""

    def __init__(self, caps: UploadCaps, redis: Redis, prefix: str, lease_seconds: float) -> None:
        super().__init__(caps)
        self.redis = redis
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self._acquire: Any = redis.register_script(_ACQUIRE)

    @asynccontextmanager
    async def hold(self, user_id: uuid.UUID, org_id: uuid.UUID) -> AsyncIterator[None]:
        keys = [f"{self.prefix}uploads:user:{user_id}", f"{self.prefix}uploads:org:{org_id}"]
        upload = uuid.uuid4().hex
        caps = [self.caps.per_user, self.caps.per_org]
        try:
            taken = await self._acquire(keys=keys, args=[upload, self.lease_ms, *caps])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("Upload accounting is unavailable; try again shortly") from exc
        if not taken:
            user_full = await self._count(keys[0]) >= self.caps.per_user
            raise _refused("user" if user_full else "organization")
        try:
            yield
        finally:
            try:
                for key in keys:
                    await self.redis.zrem(key, upload)
            except (RedisError, OSError):
                pass  # the lease runs out on its own

    async def _count(self, key: str) -> int:
        try:
            return int(await self.redis.zcard(key))
        except (RedisError, OSError):
            return 0


def create_upload_slots(settings: Settings, redis: Redis | None) -> UploadSlots:
    caps = UploadCaps(
        per_user=settings.upload_max_concurrent_per_user,
        per_org=settings.upload_max_concurrent_per_org,
    )
    if redis is None:
        return UploadSlots(caps)
    lease = settings.body_read_timeout_seconds + LEASE_MARGIN_SECONDS
    return RedisUploadSlots(caps, redis, settings.redis_key_prefix, lease)
