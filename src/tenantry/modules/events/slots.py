"""How many event streams one user and one organization may hold open (429 beyond).

`EVENTS_MAX_STREAMS_PER_USER` (5) and `EVENTS_MAX_STREAMS_PER_ORG` (200). Without Redis
the counters live in the process; with Redis they are shared by every API process: a
sorted set per counter, one member per open stream whose score is its lease's end. An
open stream renews its lease while it runs (`renew`, at every check of its caller), so
the slots of a process that died free themselves after `LEASE_SECONDS`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.config import Settings
from tenantry.core.errors import RateLimited, ServiceUnavailable

RETRY_AFTER_SECONDS = 10
LEASE_SECONDS = 60.0

# KEYS: the counters; ARGV[1]: the stream's id, ARGV[2]: lease ms, ARGV[3..]: the caps.
# Returns 0 when taken, else the 1-based index of the first full counter.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
        return i
    end
end
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
end
return 0
"""
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, 'XX', now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', key, tonumber(ARGV[2]))
end
return 1
"""


def _refused(scope: str) -> RateLimited:
    return RateLimited(
        RETRY_AFTER_SECONDS, f"Too many open event streams for this {scope}; close one first"
    )


class StreamSlot:
    """One open stream's place on its user's and organization's counters."""

    def __init__(self, slots: StreamSlots, user_id: uuid.UUID, org_id: uuid.UUID) -> None:
        self.slots = slots
        self.user_id = user_id
        self.org_id = org_id
        self.id = uuid.uuid4().hex
        self.released = False

    async def renew(self) -> None:
        await self.slots.renew(self)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.slots.release(self)


class StreamSlots:
    """In-process counters (one API process, the embedded mode)."""

    def __init__(self, per_user: int, per_org: int) -> None:
        self.per_user = per_user
        self.per_org = per_org
        self._users: dict[uuid.UUID, int] = {}
        self._orgs: dict[uuid.UUID, int] = {}

    async def acquire(self, user_id: uuid.UUID, org_id: uuid.UUID) -> StreamSlot:
        # No await between the checks and the increments: one event loop, no race.
        if self._users.get(user_id, 0) >= self.per_user:
            raise _refused("user")
        if self._orgs.get(org_id, 0) >= self.per_org:
            raise _refused("organization")
        self._users[user_id] = self._users.get(user_id, 0) + 1
        self._orgs[org_id] = self._orgs.get(org_id, 0) + 1
        return StreamSlot(self, user_id, org_id)

    async def renew(self, slot: StreamSlot) -> None:
        return

    async def release(self, slot: StreamSlot) -> None:
        _decrement(self._users, slot.user_id)
        _decrement(self._orgs, slot.org_id)


def _decrement(counts: dict[uuid.UUID, int], key: uuid.UUID) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class RedisStreamSlots(StreamSlots):
    """Counters shared by every API process through Redis, each slot a renewed lease."""

    def __init__(self, per_user: int, per_org: int, redis: Redis, prefix: str) -> None:
        super().__init__(per_user, per_org)
        self.redis = redis
        self.prefix = prefix
        self.lease_ms = int(LEASE_SECONDS * 1000)
        self._acquire: Any = redis.register_script(_ACQUIRE)
        self._renew: Any = redis.register_script(_RENEW)
        self._renewed_at: dict[str, float] = {}

    def _keys(self, slot: StreamSlot) -> list[str]:
        return [
            f"{self.prefix}events:streams:user:{slot.user_id}",
            f"{self.prefix}events:streams:org:{slot.org_id}",
        ]

    async def acquire(self, user_id: uuid.UUID, org_id: uuid.UUID) -> StreamSlot:
        slot = StreamSlot(self, user_id, org_id)
        try:
            full = await self._acquire(
                keys=self._keys(slot), args=[slot.id, self.lease_ms, self.per_user, self.per_org]
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("Events are unavailable; try again shortly") from exc
        if full:
            raise _refused("user" if int(full) == 1 else "organization")
        self._renewed_at[slot.id] = time.monotonic()
        return slot

    async def renew(self, slot: StreamSlot) -> None:
        # A lease of 60 s renewed every ~15 s: three renewals may fail before it lapses.
        if time.monotonic() - self._renewed_at.get(slot.id, 0.0) < LEASE_SECONDS / 4:
            return
        try:
            await self._renew(keys=self._keys(slot), args=[slot.id, self.lease_ms])
            self._renewed_at[slot.id] = time.monotonic()
        except (RedisError, OSError):
            pass  # tried again at the next check

    async def release(self, slot: StreamSlot) -> None:
        self._renewed_at.pop(slot.id, None)
        try:
            for key in self._keys(slot):
                await self.redis.zrem(key, slot.id)
        except (RedisError, OSError):
            pass  # the lease runs out on its own


def create_stream_slots(settings: Settings, redis: Redis | None) -> StreamSlots:
    per_user, per_org = settings.events_max_streams_per_user, settings.events_max_streams_per_org
    if redis is None:
        return StreamSlots(per_user, per_org)
    return RedisStreamSlots(per_user, per_org, redis, settings.redis_key_prefix)
