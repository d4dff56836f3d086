"""How many of a thing one user and one organization may hold at once (429 beyond).

Uploads in flight (modules/files/slots.py) and open event streams (modules/events/slots.py)
are both capped per user and per organization. `Slots.acquire(user, org)` takes a place on
both counters or raises the caller's refusal (`RateLimited`) naming the counter that is
full; `Slot.release()` gives both back (once, however often it is called).

`Slots` counts in the process (the embedded mode: one process). `RedisSlots` shares the
counters between every process through Redis: a sorted set per counter, one member per slot
whose score is its lease's end, checked and taken in one script (all or nothing), so the
slots of a process that died free themselves once their lease has passed; a slot held for
longer than the lease renews it (`Slot.renew()`, throttled to a quarter of the lease).
Redis unreachable while acquiring → 503, never an uncounted slot.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.core.errors import AppError, ServiceUnavailable

Scope = Literal["user", "organization"]
Refusal = Callable[[Scope], AppError]

# KEYS: the counters; ARGV[1]: the slot's id, ARGV[2]: lease ms, ARGV[3..]: the caps.
# Returns 0 when taken (on every counter), else the 1-based index of the first full one.
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


class Slot:
    """One place on a user's and an organization's counters."""

    __slots__ = ("id", "org_id", "owner", "released", "user_id")

    def __init__(self, owner: Slots, user_id: uuid.UUID, org_id: uuid.UUID) -> None:
        self.owner = owner
        self.user_id = user_id
        self.org_id = org_id
        self.id = uuid.uuid4().hex
        self.released = False

    async def renew(self) -> None:
        await self.owner.renew(self)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.owner.release(self)


class Slots:
    """In-process counters."""

    def __init__(self, per_user: int, per_org: int, refuse: Refusal) -> None:
        self.per_user = per_user
        self.per_org = per_org
        self.refuse = refuse
        self._users: dict[uuid.UUID, int] = {}
        self._orgs: dict[uuid.UUID, int] = {}

    async def acquire(self, user_id: uuid.UUID, org_id: uuid.UUID) -> Slot:
        # No await between the checks and the increments: one event loop, no race.
        if self._users.get(user_id, 0) >= self.per_user:
            raise self.refuse("user")
        if self._orgs.get(org_id, 0) >= self.per_org:
            raise self.refuse("organization")
        self._users[user_id] = self._users.get(user_id, 0) + 1
        self._orgs[org_id] = self._orgs.get(org_id, 0) + 1
        return Slot(self, user_id, org_id)

    async def renew(self, slot: Slot) -> None:
        return

    async def release(self, slot: Slot) -> None:
        _decrement(self._users, slot.user_id)
        _decrement(self._orgs, slot.org_id)


def _decrement(counts: dict[uuid.UUID, int], key: uuid.UUID) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class RedisSlots(Slots):
    """Counters shared by every process through Redis, each slot a lease.

    `namespace` names the counters (`<prefix><namespace>:user:<id>`, `...:org:<id>`);
    `unavailable` is the 503's message when Redis cannot be asked.
    """

    def __init__(
        self,
        per_user: int,
        per_org: int,
        refuse: Refusal,
        *,
        redis: Redis,
        prefix: str,
        namespace: str,
        lease_seconds: float,
        unavailable: str,
    ) -> None:
        super().__init__(per_user, per_org, refuse)
        self.redis = redis
        self.keys_prefix = f"{prefix}{namespace}"
        self.lease_seconds = lease_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.unavailable = unavailable
        self._acquire: Any = redis.register_script(_ACQUIRE)
        self._renew: Any = redis.register_script(_RENEW)
        self._renewed_at: dict[str, float] = {}

    def _keys(self, slot: Slot) -> list[str]:
        return [
            f"{self.keys_prefix}:user:{slot.user_id}",
            f"{self.keys_prefix}:org:{slot.org_id}",
        ]

    async def acquire(self, user_id: uuid.UUID, org_id: uuid.UUID) -> Slot:
        slot = Slot(self, user_id, org_id)
        try:
            full = await self._acquire(
                keys=self._keys(slot), args=[slot.id, self.lease_ms, self.per_user, self.per_org]
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(self.unavailable) from exc
        if full:
            raise self.refuse("user" if int(full) == 1 else "organization")
        self._renewed_at[slot.id] = time.monotonic()
        return slot

    async def renew(self, slot: Slot) -> None:
        # Renewed at most every quarter lease: three renewals may fail before it lapses.
        if time.monotonic() - self._renewed_at.get(slot.id, 0.0) < self.lease_seconds / 4:
            return
        try:
            await self._renew(keys=self._keys(slot), args=[slot.id, self.lease_ms])
            self._renewed_at[slot.id] = time.monotonic()
        except (RedisError, OSError):
            pass  # tried again at the next renewal

    async def release(self, slot: Slot) -> None:
        self._renewed_at.pop(slot.id, None)
        try:
            for key in self._keys(slot):
                await self.redis.zrem(key, slot.id)
        except (RedisError, OSError):
            pass  # the lease runs out on its own
