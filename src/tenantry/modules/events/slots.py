"""How many event streams one user and one organization may hold open (429 beyond).

`EVENTS_MAX_STREAMS_PER_USER` (5) and `EVENTS_MAX_STREAMS_PER_ORG` (200), counted by
core/slots.py: in the process without Redis, shared by every API process with Redis. An
open stream renews its lease while it runs (`renew`, at every check of its caller), so the
slots of a process that died free themselves after `LEASE_SECONDS`.
"""

from __future__ import annotations

from redis.asyncio import Redis

from tenantry.config import Settings
from tenantry.core.errors import RateLimited
from tenantry.core.slots import RedisSlots, Scope, Slot, Slots

RETRY_AFTER_SECONDS = 10
LEASE_SECONDS = 60.0

StreamSlot = Slot
StreamSlots = Slots


def _refused(scope: Scope) -> RateLimited:
    return RateLimited(
        RETRY_AFTER_SECONDS, f"Too many open event streams for this {scope}; close one first"
    )


def create_stream_slots(settings: Settings, redis: Redis | None) -> StreamSlots:
    per_user, per_org = settings.events_max_streams_per_user, settings.events_max_streams_per_org
    if redis is None:
        return Slots(per_user, per_org, _refused)
    return RedisSlots(
        per_user,
        per_org,
        _refused,
        redis=redis,
        prefix=settings.redis_key_prefix,
        namespace="events:streams",
        lease_seconds=LEASE_SECONDS,
        unavailable="Events are unavailable; try again shortly",
    )
