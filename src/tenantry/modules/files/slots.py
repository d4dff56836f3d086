"""How many uploads one user and one organization may have in flight (429 beyond).

An upload holds a socket, a coroutine and a storage stream for as long as its body takes
to arrive (bounded by the body deadline, core/middleware.py); the caps keep one user or
one organization from holding hundreds of them. `UploadSlots.hold(user, org)` takes a
slot on both counters or raises `RateLimited`, and gives both back when the upload ends.

The counters are core/slots.py's: in the process without Redis (each `serve` worker
counts its own), shared by every process with Redis, each upload a lease that outlives
the longest body read, so the slots of a process that died free themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from tenantry.config import Settings
from tenantry.core.errors import RateLimited
from tenantry.core.slots import RedisSlots, Scope, Slots

# The client cannot know when another upload ends; a few seconds is a fair first wait.
RETRY_AFTER_SECONDS = 5
# A lease outlives the longest body read by this much (storage and database work after it).
LEASE_MARGIN_SECONDS = 120


def _refused(scope: Scope) -> RateLimited:
    return RateLimited(
        RETRY_AFTER_SECONDS, f"Too many uploads in progress for this {scope}; try again shortly"
    )


class UploadSlots:
    """`hold(user, org)`: a slot on both counters for the duration of an upload."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots

    @asynccontextmanager
    async def hold(self, user_id: uuid.UUID, org_id: uuid.UUID) -> AsyncIterator[None]:
        slot = await self.slots.acquire(user_id, org_id)
        try:
            yield
        finally:
            await slot.release()


def create_upload_slots(settings: Settings, redis: Redis | None) -> UploadSlots:
    per_user = settings.upload_max_concurrent_per_user
    per_org = settings.upload_max_concurrent_per_org
    if redis is None:
        return UploadSlots(Slots(per_user, per_org, _refused))
    return UploadSlots(
        RedisSlots(
            per_user,
            per_org,
            _refused,
            redis=redis,
            prefix=settings.redis_key_prefix,
            namespace="uploads",
            lease_seconds=settings.body_read_timeout_seconds + LEASE_MARGIN_SECONDS,
            unavailable="Upload accounting is unavailable; try again shortly",
        )
    )
