"""Membership and revocation facts in process memory, invalidated over Redis pub/sub.

The tenant gate reads three facts on every request: the session's revocation fact, the
user's `valid-after` moment and the membership. Redis is where they are shared (and the
database stays the authority behind it, see auth/revocation.py and orgs/access.py); this
layer keeps a copy in the process so a warm request makes no Redis round trip at all.

- Every write of a near-cached key (`set`, `add`, `replace_if`, `delete`,
  `delete_prefix`) goes to Redis first, then is published on one channel; every process
  (this one included) is subscribed and drops its copies of what was written.
- A copy is only trusted while the subscription is known to be live: each process
  publishes a heartbeat on the same channel every `HEARTBEAT_SECONDS` carrying its own
  clock, and a copy is served only while the last heartbeat *it received back* was sent
  less than `stale_seconds` ago. Redis delivers a channel's messages in the order it
  processed the publishes, so a heartbeat sent after an invalidation arrives after it: an
  invalidation published at `t` is applied, or the copies stop being trusted, by
  `t + stale_seconds`. A lost connection (resubscribing) or a stalled subscriber empties
  the copies and reads go to Redis until heartbeats flow again.
- A copy filled from a Redis read is only kept when no write or invalidation happened in
  this process between the read and the fill (a sequence number), so a read that raced an
  invalidation cannot reinstate what it dropped. Absent keys are remembered too ("no
  valid-after moment"): a write publishes like any other.

Without Redis (the embedded mode) the cache already lives in the process: nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.core.cache import Cache, redis_errors_as_unavailable

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 0.1
RESUBSCRIBE_SECONDS = 0.5
# A copy never outlives this, whatever Redis says (a fill does not know the remaining TTL).
LOCAL_TTL_SECONDS = 30.0
DEFAULT_MAX_ENTRIES = 50_000
CLOSE_TIMEOUT_SECONDS = 2.0


class NearCache(Cache):
    """A Redis-backed `Cache` with an in-process copy of the keys under `prefixes`."""

    def __init__(
        self,
        remote: Cache,
        redis: Redis,
        *,
        channel: str,
        prefixes: tuple[str, ...],
        stale_seconds: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._remote = remote
        self._redis = redis
        self._channel = channel
        self._prefixes = prefixes
        self._stale = stale_seconds
        self._max_entries = max_entries
        self._origin = secrets.token_hex(8)
        self._local: OrderedDict[str, tuple[bytes | None, float]] = OrderedDict()
        self._sequence = 0  # bumped by every write, invalidation and flush
        self._heard_at = float("-inf")  # send time of the last own heartbeat received back
        self._tasks: list[asyncio.Task[None]] = []
        self.local_hits = 0  # served from the process (tests and metrics read it)

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._listen(), name="nearcache-listen"),
                asyncio.create_task(self._heartbeat(), name="nearcache-heartbeat"),
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a pub/sub connection stuck in its close must not hold up shutdown.
            await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_SECONDS)
        self._tasks = []
        self._flush()
        await self._remote.close()

    @property
    def trusted(self) -> bool:
        return time.monotonic() - self._heard_at < self._stale

    # --- reads --------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not self.trusted:
            self._flush()
            return await self._remote.get_many(keys)
        now = time.monotonic()
        found: dict[str, bytes | None] = {}
        missing: list[str] = []
        for key in keys:
            entry = self._local.get(key)
            if entry is not None and entry[1] > now:
                found[key] = entry[0]
            else:
                missing.append(key)
        self.local_hits += len(found)
        if missing:
            sequence = self._sequence
            values = await self._remote.get_many(missing)
            keep = sequence == self._sequence and self.trusted
            for key, value in zip(missing, values, strict=True):
                found[key] = value
                if keep and self._near(key):
                    self._remember(key, value, None)
        return [found[key] for key in keys]

    # --- writes: Redis first, then this process, then everyone ------------------------

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._remote.set(key, value, ttl=ttl)
        await self._written([key], [], remember=(value, ttl))

    async def add(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        done = await self._remote.add(key, value, ttl=ttl)
        await self._written([key], [], remember=(value, ttl) if done else None)
        return done

    async def replace_if(self, key: str, expected: bytes, value: bytes, *, ttl: float) -> bool:
        done = await self._remote.replace_if(key, expected, value, ttl=ttl)
        if done:
            await self._written([key], [], remember=(value, ttl))
        return done

    async def delete(self, key: str) -> None:
        await self._remote.delete(key)
        await self._written([key], [], remember=None)

    async def delete_prefix(self, prefix: str) -> int:
        deleted = await self._remote.delete_prefix(prefix)
        await self._written([], [prefix], remember=None)
        return deleted

    async def _written(
        self,
        keys: list[str],
        prefixes: list[str],
        *,
        remember: tuple[bytes, float | None] | None,
    ) -> None:
        keys = [key for key in keys if self._near(key)]
        prefixes = [
            p for p in prefixes if self._near(p) or any(n.startswith(p) for n in self._prefixes)
        ]
        if not keys and not prefixes:
            return
        self._drop(keys, prefixes)
        if remember is not None and keys and self.trusted:
            self._remember(keys[0], remember[0], remember[1])
        message = orjson.dumps({"o": self._origin, "k": keys, "p": prefixes})
        async with redis_errors_as_unavailable("The cache"):
            await self._redis.publish(self._channel, message)

    # --- the process's copies -----------------------------------------------------------

    def _near(self, key: str) -> bool:
        return key.startswith(self._prefixes)

    def _remember(self, key: str, value: bytes | None, ttl: float | None) -> None:
        life = LOCAL_TTL_SECONDS if ttl is None else min(ttl, LOCAL_TTL_SECONDS)
        self._local[key] = (value, time.monotonic() + life)
        self._local.move_to_end(key)
        while len(self._local) > self._max_entries:
            self._local.popitem(last=False)

    def _drop(self, keys: list[str], prefixes: list[str]) -> None:
        self._sequence += 1
        for key in keys:
            self._local.pop(key, None)
        if prefixes:
            for key in [k for k in self._local if k.startswith(tuple(prefixes))]:
                del self._local[key]

    def _flush(self) -> None:
        self._sequence += 1
        self._local.clear()

    # --- the subscription -----------------------------------------------------------

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._receive(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("cache invalidations lost (%s); resubscribing", exc)
            finally:
                # Whatever was published while not listening is lost: forget everything.
                self._heard_at = float("-inf")
                self._flush()
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(
                        pubsub.aclose(),  # type: ignore[no-untyped-call]
                        CLOSE_TIMEOUT_SECONDS,
                    )
            await asyncio.sleep(RESUBSCRIBE_SECONDS)

    def _receive(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if message.get("o") == self._origin:
            sent = message.get("h")
            if isinstance(sent, float):
                self._heard_at = max(self._heard_at, sent)
            return  # our own writes were applied before they were published
        keys = [k for k in message.get("k", ()) if isinstance(k, str)]
        prefixes = [p for p in message.get("p", ()) if isinstance(p, str)]
        if keys or prefixes:
            # Another process's heartbeat invalidates nothing: bumping the sequence for it
            # would discard every fill in flight (with N processes, one beat every 0.1/N s).
            self._drop(keys, prefixes)

    async def _heartbeat(self) -> None:
        while True:
            beat = orjson.dumps({"o": self._origin, "h": time.monotonic()})
            try:
                await self._redis.publish(self._channel, beat)
            except (RedisError, OSError) as exc:
                log.debug("cache heartbeat not sent: %s", exc)
            await asyncio.sleep(HEARTBEAT_SECONDS)
