"""Where the daily usage counters live until `plans.flush_usage` writes them.

`MemoryUsage` (no `REDIS_URL`): this process's counts. `RedisUsage`: one shared count for
every API process — a hash per organization and day (`requests`, `records`, HINCRBY), a
set of active user ids per organization and day (SADD; kept, not reset, by a flush so the
distinct count stays whole), an index set of the pending organization/days, all with a TTL
of `KEY_TTL_SECONDS`. `take()` reads and resets the counters in one Lua script, so two
workers flushing at once never count anything twice. Counting is best-effort and off the
request path: counts gather in the process and go to Redis in one pipeline a second
(Redis down is logged, the counts wait for the next send, the request never notices).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Key = tuple[uuid.UUID, dt.date]
KEY_TTL_SECONDS = 4 * 24 * 3600
KEEP_USERS_DAYS = 3  # a memory store forgets active-user sets older than this
SEND_INTERVAL_SECONDS = 1.0  # how long counts gather in a process before going to Redis


@dataclass
class Counts:
    """Unflushed counts of one organization and day (`active_users`: the day's whole count)."""

    requests: int = 0
    records_created: int = 0
    active_users: int = 0


class UsageStore(Protocol):
    async def request(self, org_id: uuid.UUID, day: dt.date, user_id: uuid.UUID | None) -> None:
        """Count one request (and its user as active); never raises."""

    def records(self, org_id: uuid.UUID, day: dt.date, count: int) -> None:
        """Count created records (called from a synchronous commit hook); never raises."""

    async def settle(self) -> None:
        """Wait for counts still on their way (records sent in the background)."""

    async def take(self) -> dict[Key, Counts]:
        """Read and reset every pending count, atomically."""

    async def give_back(self, taken: dict[Key, Counts]) -> None:
        """Return counts `take()` handed out but that could not be written."""

    async def pending(self, org_id: uuid.UUID, days: list[dt.date]) -> dict[dt.date, Counts]:
        """This organization's unflushed counts of `days` (without resetting them)."""

    async def close(self) -> None: ...


class MemoryUsage:
    """One process's counts (the default without Redis)."""

    def __init__(self) -> None:
        self.counts: dict[Key, Counts] = defaultdict(Counts)
        self.users: dict[Key, set[uuid.UUID]] = defaultdict(set)

    async def request(self, org_id: uuid.UUID, day: dt.date, user_id: uuid.UUID | None) -> None:
        self.counts[(org_id, day)].requests += 1
        if user_id is not None:
            self.users[(org_id, day)].add(user_id)

    def records(self, org_id: uuid.UUID, day: dt.date, count: int) -> None:
        self.counts[(org_id, day)].records_created += count

    async def settle(self) -> None:
        return None

    async def take(self) -> dict[Key, Counts]:
        taken, self.counts = dict(self.counts), defaultdict(Counts)
        for key, counts in taken.items():
            counts.active_users = len(self.users.get(key, ()))
        horizon = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=KEEP_USERS_DAYS)
        for key in [k for k in self.users if k[1] < horizon]:
            del self.users[key]
        return taken

    async def give_back(self, taken: dict[Key, Counts]) -> None:
        for key, counts in taken.items():
            entry = self.counts[key]
            entry.requests += counts.requests
            entry.records_created += counts.records_created

    async def pending(self, org_id: uuid.UUID, days: list[dt.date]) -> dict[dt.date, Counts]:
        out: dict[dt.date, Counts] = {}
        for day in days:
            counts, users = self.counts.get((org_id, day)), self.users.get((org_id, day))
            if counts is not None or users:
                out[day] = Counts(
                    requests=counts.requests if counts else 0,
                    records_created=counts.records_created if counts else 0,
                    active_users=len(users or ()),
                )
        return out

    async def close(self) -> None:
        return None


# KEYS[1] = the index set; ARGV[1] = the key prefix. Every pending organization/day's
# counters are read and deleted in one step; the active-user sets stay (their TTL ends them).
_TAKE = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local out = {}
for _, member in ipairs(members) do
  local counters = ARGV[1] .. 'c:' .. member
  local values = redis.call('HMGET', counters, 'requests', 'records')
  redis.call('DEL', counters)
  local users = redis.call('SCARD', ARGV[1] .. 'u:' .. member)
  table.insert(out, {member, values[1] or '0', values[2] or '0', users})
end
return out
"""


class RedisUsage:
    """Counts shared by every process through Redis (`REDIS_URL` set).

    The request path never waits for Redis: counts gather in this process and one
    pipeline per `interval` seconds adds them (HINCRBY/SADD are additive, so batching
    changes nothing but the delay). `settle()` sends what is gathered at once; `take()` and
    `pending()` settle first, so this process's own counts are always in what they read,
    another process's within `interval`.
    """

    def __init__(self, redis: Redis, prefix: str, *, interval: float = SEND_INTERVAL_SECONDS):
        self.redis = redis
        self.prefix = f"{prefix}usage:"
        self.index = f"{self.prefix}pending"
        self.interval = interval
        self._take = redis.register_script(_TAKE)
        self._counts: dict[Key, Counts] = defaultdict(Counts)
        self._users: dict[Key, set[str]] = defaultdict(set)
        self._sending = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None

    @staticmethod
    def _member(org_id: uuid.UUID, day: dt.date) -> str:
        return f"{org_id}:{day.isoformat()}"

    def _queue(self, pipe: Any, key: Key, requests: int, records: int, users: set[str]) -> None:
        member = self._member(*key)
        counters, user_set = f"{self.prefix}c:{member}", f"{self.prefix}u:{member}"
        if requests:
            pipe.hincrby(counters, "requests", requests)
        if records:
            pipe.hincrby(counters, "records", records)
        pipe.expire(counters, KEY_TTL_SECONDS)
        if users:
            pipe.sadd(user_set, *users)
            pipe.expire(user_set, KEY_TTL_SECONDS)
        pipe.sadd(self.index, member)

    async def _add(self, counts: dict[Key, Counts], users: dict[Key, set[str]]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for key in counts.keys() | users.keys():
            entry = counts.get(key) or Counts()
            self._queue(pipe, key, entry.requests, entry.records_created, users.get(key, set()))
        pipe.expire(self.index, KEY_TTL_SECONDS)
        await pipe.execute()

    async def _send(self) -> None:
        """Add everything gathered so far to Redis; on failure keep it for the next send."""
        async with self._sending:
            counts, self._counts = self._counts, defaultdict(Counts)
            users, self._users = self._users, defaultdict(set)
            if not counts and not users:
                return
            try:
                await self._add(counts, users)
            except (RedisError, OSError) as exc:
                log.warning("usage counts not recorded yet (Redis): %s", exc)
                for key, entry in counts.items():
                    self._counts[key].requests += entry.requests
                    self._counts[key].records_created += entry.records_created
                for key, ids in users.items():
                    self._users[key] |= ids

    async def _send_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self._send()

    def _schedule(self) -> None:
        if self._sender is not None and not self._sender.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script): the next settle() sends it
            return
        self._sender = loop.create_task(self._send_later())

    async def request(self, org_id: uuid.UUID, day: dt.date, user_id: uuid.UUID | None) -> None:
        self._counts[(org_id, day)].requests += 1
        if user_id is not None:
            self._users[(org_id, day)].add(str(user_id))
        self._schedule()

    def records(self, org_id: uuid.UUID, day: dt.date, count: int) -> None:
        self._counts[(org_id, day)].records_created += count
        self._schedule()

    async def settle(self) -> None:
        await self._send()

    async def take(self) -> dict[Key, Counts]:
        await self.settle()
        rows: list[Any] = await self._take(keys=[self.index], args=[self.prefix])
        taken: dict[Key, Counts] = {}
        for member, requests, records, users in rows:
            org, _, day = _text(member).rpartition(":")
            taken[(uuid.UUID(org), dt.date.fromisoformat(day))] = Counts(
                requests=int(_text(requests)),
                records_created=int(_text(records)),
                active_users=int(users),
            )
        return taken

    async def give_back(self, taken: dict[Key, Counts]) -> None:
        await self._add(taken, {})

    async def pending(self, org_id: uuid.UUID, days: list[dt.date]) -> dict[dt.date, Counts]:
        await self.settle()
        pipe = self.redis.pipeline(transaction=False)
        for day in days:
            member = self._member(org_id, day)
            pipe.hmget(f"{self.prefix}c:{member}", "requests", "records")
            pipe.scard(f"{self.prefix}u:{member}")
        results: list[Any] = await pipe.execute()
        out: dict[dt.date, Counts] = {}
        for i, day in enumerate(days):
            (requests, records), users = results[2 * i], int(results[2 * i + 1])
            if requests is not None or records is not None or users:
                out[day] = Counts(
                    requests=int(_text(requests or b"0")),
                    records_created=int(_text(records or b"0")),
                    active_users=users,
                )
        return out

    async def close(self) -> None:
        await self.settle()
        if self._sender is not None:  # asleep with nothing left to send
            self._sender.cancel()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def create_usage_store(redis: Redis | None, prefix: str) -> UsageStore:
    """Redis counters when the app has a Redis client, else this process's memory."""
    return RedisUsage(redis, prefix) if redis is not None else MemoryUsage()
