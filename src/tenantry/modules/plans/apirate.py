"""The plan's per-organization API rate (`apiRequestsPerMinute`), counted in the process.

A sliding-window counter per organization: the current minute's hits plus the previous
minute's, weighted by how much of it still overlaps the last 60 seconds. Each request is
decided in memory, with no Redis round trip:

- In one process the count is exact: the N+1st request of a window is refused (429 with
  `Retry-After`) and not counted.
- With Redis, each process adds its unsent hits to a shared per-minute counter and reads
  the total back (one pipeline per `PLAN_RATE_SYNC_SECONDS`, default 1 s, for all the
  organizations it saw). Between two syncs a process does not see the others' hits: with
  P processes an organization may get up to (P - 1) x (its request rate x sync interval)
  more than its limit — approximate on purpose, it is a fairness limit, not a security one
  (logins and other abuse limits stay exact in core/ratelimit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.core.errors import RateLimited

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY_TTL_SECONDS = 2 * WINDOW_SECONDS + 10


@dataclass
class _Window:
    index: int  # which minute since the epoch
    total: int = 0  # every process's hits this minute, as of the last sync (ours included)
    unsent: int = 0  # our hits this minute not yet added to the shared counter
    previous: int = 0  # every process's hits in the minute before


class PlanRate:
    """In-process accounting of `apiRequestsPerMinute`, shared through Redis in batches."""

    def __init__(
        self, redis: Redis | None, prefix: str, *, enabled: bool, sync_seconds: float
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}plan-rate:"
        self._enabled = enabled
        self._sync_seconds = sync_seconds
        self._windows: dict[uuid.UUID, _Window] = {}
        self._task: asyncio.Task[None] | None = None

    def hit(self, org_id: uuid.UUID, per_minute: int, now: float | None = None) -> None:
        """Count one request of `org_id`; `RateLimited` (not counted) past `per_minute`."""
        if not self._enabled:
            return
        now = time.time() if now is None else now
        index, into = divmod(now, WINDOW_SECONDS)
        window = self._window(org_id, int(index))
        weight = 1.0 - into / WINDOW_SECONDS
        used = window.previous * weight + window.total + window.unsent
        if used + 1 > max(per_minute, 1):
            raise RateLimited(retry_after=max(1, math.ceil(WINDOW_SECONDS - into)))
        window.unsent += 1
        self._start_sync()

    def _window(self, org_id: uuid.UUID, index: int) -> _Window:
        window = self._windows.get(org_id)
        if window is None:
            window = self._windows[org_id] = _Window(index)
        elif window.index != index:
            # A new minute: this one's count becomes the previous (unsent hits too: they
            # happened; the sync still sends them under their own minute).
            current = window.total + window.unsent if window.index == index - 1 else 0
            self._flush_later(org_id, window)
            window = self._windows[org_id] = _Window(index, previous=current)
        return window

    # --- sharing with the other processes -------------------------------------------

    def _key(self, org_id: uuid.UUID, index: int) -> str:
        return f"{self._prefix}{org_id}:{index}"

    def _flush_later(self, org_id: uuid.UUID, old: _Window) -> None:
        if self._redis is not None and old.unsent:
            key, amount = self._key(org_id, old.index), old.unsent
            old.unsent = 0
            redis = self._redis

            async def send() -> None:
                with contextlib.suppress(RedisError, OSError):
                    await redis.incrby(key, amount)

            asyncio.get_running_loop().create_task(send())

    def _start_sync(self) -> None:
        if self._redis is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        while self._windows:
            await asyncio.sleep(self._sync_seconds)
            try:
                await self.sync()
            except (RedisError, OSError) as exc:  # counts wait for the next sync
                log.warning("plan rate counts not shared: %s", exc)

    async def sync(self) -> None:
        """Send this process's hits, learn every process's totals (one pipeline)."""
        if self._redis is None:
            return
        current = int(time.time() // WINDOW_SECONDS)
        for org_id in [o for o, w in self._windows.items() if w.index < current - 1]:
            del self._windows[org_id]  # idle for two minutes: nothing left to decide on
        if not self._windows:
            return
        sent = {org_id: (w.index, w.unsent) for org_id, w in self._windows.items()}
        for window in self._windows.values():
            window.total += window.unsent  # in flight: counted once, whatever happens next
            window.unsent = 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for org_id, (index, unsent) in sent.items():
                    key = self._key(org_id, index)
                    pipe.incrby(key, unsent)
                    pipe.expire(key, KEY_TTL_SECONDS)
                    pipe.get(self._key(org_id, index - 1))
                replies = await pipe.execute()
        except (RedisError, OSError):
            for org_id, (index, unsent) in sent.items():
                pending = self._windows.get(org_id)
                if pending is not None and pending.index == index:
                    pending.unsent += unsent  # not sent: try again next time
                    pending.total -= unsent
            raise
        for position, (org_id, (index, _unsent)) in enumerate(sent.items()):
            total, _expiry, previous = replies[3 * position : 3 * position + 3]
            synced = self._windows.get(org_id)
            if synced is None or synced.index != index:
                continue
            synced.total = int(total)
            synced.previous = max(synced.previous, int(previous or 0))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self.sync()  # what this process counted still counts for the others
