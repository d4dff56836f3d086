"""A small key/value cache: in-process by default, Redis when `REDIS_URL` is set.

Values are bytes (`get`/`set`) or anything orjson serialises (`get_json`/`set_json`).
Keys are plain strings; the Redis implementation puts every key under
`settings.redis_key_prefix + namespace + ":"` (`cache:` by default, `counts:` for list
totals), so `delete_prefix` never touches other data.
A Redis that is down surfaces as `ServiceUnavailable` (503), never as a 500.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.config import Settings
from tenantry.core.errors import ServiceUnavailable

DEFAULT_MAX_ENTRIES = 10_000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
T = TypeVar("T")
# Compare-and-set in one step on the server (`replace_if`).
_REPLACE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class Cache(ABC):
    """get/set with an optional TTL in seconds, delete, delete by key prefix."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """The values of `keys`, in order (one round trip where the backend allows)."""
        return [await self.get(key) for key in keys]

    @abstractmethod
    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None: ...

    @abstractmethod
    async def add(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        """Set `key` only if it holds nothing; whether it was set (a lease, see below)."""

    @abstractmethod
    async def replace_if(self, key: str, expected: bytes, value: bytes, *, ttl: float) -> bool:
        """Set `key` to `value` only while it still holds `expected`, atomically.

        With `add`, the way to fill a cache from the database without a race: `add` a
        unique lease before reading, `replace_if` the lease after. A `delete` between the
        two (an invalidation) removes the lease, so the stale answer is never written.
        """

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with `prefix`; returns how many were deleted."""

    async def get_json(self, key: str) -> Any:
        raw = await self.get(key)
        return None if raw is None else orjson.loads(raw)

    async def set_json(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        await self.set(key, orjson.dumps(value), ttl=ttl)

    @abstractmethod
    async def close(self) -> None:
        """Release what the cache owns."""


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds")


class MemoryCache(Cache):
    """Per-process LRU dict with expiry; bounded to `max_entries`."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        _check_ttl(ttl)
        expires_at = None if ttl is None else time.monotonic() + ttl
        self._entries[key] = (bytes(value), expires_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def add(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl=ttl)
        return True

    async def replace_if(self, key: str, expected: bytes, value: bytes, *, ttl: float) -> bool:
        # No await between the comparison and the write: atomic on the event loop.
        if await self.get(key) != expected:
            return False
        await self.set(key, value, ttl=ttl)
        return True

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def close(self) -> None:
        self._entries.clear()


@asynccontextmanager
async def redis_errors_as_unavailable(what: str = "Redis") -> AsyncIterator[None]:
    """Turn a Redis connection/timeout failure into a 503 for the request path."""
    try:
        yield
    except RedisError as exc:
        raise ServiceUnavailable(f"{what} is unavailable; try again shortly") from exc


class RedisCache(Cache):
    """Cache on a shared `redis.asyncio.Redis` client (the app owns and closes it)."""

    def __init__(self, redis: Redis, *, key_prefix: str, namespace: str = "cache") -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}{namespace}:"

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        async with redis_errors_as_unavailable("The cache"):
            return await operation()

    async def get(self, key: str) -> bytes | None:
        value = await self._call(lambda: self._redis.get(self._key(key)))
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        values = await self._call(lambda: self._redis.mget([self._key(key) for key in keys]))
        return [
            None if value is None else value.encode() if isinstance(value, str) else bytes(value)
            for value in values
        ]

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        _check_ttl(ttl)
        px = None if ttl is None else max(1, round(ttl * 1000))
        await self._call(lambda: self._redis.set(self._key(key), bytes(value), px=px))

    async def add(self, key: str, value: bytes, *, ttl: float | None = None) -> bool:
        _check_ttl(ttl)
        px = None if ttl is None else max(1, round(ttl * 1000))
        done = await self._call(
            lambda: self._redis.set(self._key(key), bytes(value), px=px, nx=True)
        )
        return bool(done)

    async def replace_if(self, key: str, expected: bytes, value: bytes, *, ttl: float) -> bool:
        _check_ttl(ttl)
        px = max(1, round(ttl * 1000))
        done = await self._call(
            lambda: self._redis.eval(_REPLACE_IF, 1, self._key(key), expected, value, px)
        )
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._redis.unlink(self._key(key)))

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._key(prefix)) + "*"
        deleted = 0
        async with redis_errors_as_unavailable("The cache"):
            batch: list[bytes] = []
            async for key in self._redis.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._redis.unlink(*batch)
                    batch = []
            if batch:
                deleted += await self._redis.unlink(*batch)
        return deleted

    async def close(self) -> None:
        """Nothing to release: the shared Redis client is closed by the app's lifespan."""


def create_cache(settings: Settings, redis: Redis | None, *, namespace: str = "cache") -> Cache:
    """A cache of its own: a separate bounded dict in process, a separate key prefix in Redis.

    List totals (`namespace="counts"`) live apart from the main cache, so thousands of
    distinct searches evict other totals, never a membership or a session fact.
    """
    if redis is None:
        return MemoryCache()
    return RedisCache(redis, key_prefix=settings.redis_key_prefix, namespace=namespace)
