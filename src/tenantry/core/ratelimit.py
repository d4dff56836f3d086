"""Rate limits over the `limits` library (async API): memory storage, or Redis with `REDIS_URL`.

`RateLimiter.hit(key, "5/minute")` counts one request and raises `RateLimited` (429 with
`Retry-After`) when the limit is exceeded, or `ServiceUnavailable` (503) when Redis cannot
be reached: a limiter that cannot count never lets everything through and never 500s.
Small limits use the exact moving window; limits above `SLIDING_WINDOW_THRESHOLD` use the
cheaper sliding-window counter. `RATE_LIMIT_ENABLED=false` turns every limit off.

Routes use the dependency factory::

    @router.post("/auth/login", dependencies=[Depends(rate_limit("30/minute"))])

Keys are hashed before they reach the storage, so emails or IPs never sit in Redis as-is.

`RateLimiter.attempt(key, Backoff(...))` is the other shape: a few free attempts, then one
attempt per delay, the delay doubling at each further attempt (a per-account login delay
that slows guessing from any number of IPs without ever locking the account for good).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import (
    RateLimiter as LimitsStrategy,
)
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tenantry.config import Settings
from tenantry.core.errors import RateLimited, ServiceUnavailable
from tenantry.services import services_of

SLIDING_WINDOW_THRESHOLD = 1000
KeyFunction = Callable[[Request], str | Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """`free_attempts` attempts per series, then one per delay: base, 2 base, 4 base ... up to max.

    A series starts with its first attempt and is forgotten `window_seconds` later (or when
    `RateLimiter.forget_attempts` is called, e.g. at a successful login).
    """

    free_attempts: int
    base_seconds: int
    max_seconds: int
    window_seconds: int

    def delay_after(self, attempts: int) -> int:
        """The pause that attempt number `attempts` (beyond the free ones) opens."""
        doublings = min(max(attempts - self.free_attempts - 1, 0), 40)
        return min(self.max_seconds, self.base_seconds << doublings)


class RateLimiter:
    def __init__(self, storage: Storage, *, enabled: bool = True) -> None:
        self.storage = storage
        self.enabled = enabled
        self._moving = MovingWindowRateLimiter(storage)
        self._sliding = SlidingWindowCounterRateLimiter(storage)

    def _strategy(self, item: RateLimitItem) -> LimitsStrategy:
        return self._sliding if item.amount > SLIDING_WINDOW_THRESHOLD else self._moving

    async def hit(self, key: str, limit: str | RateLimitItem) -> None:
        """Count one hit on `key`; raise `RateLimited` past `limit`, `ServiceUnavailable`."""
        if not self.enabled:
            return
        item = parse_limit(limit) if isinstance(limit, str) else limit
        strategy = self._strategy(item)
        identifier = _hash_key(key)
        try:
            if await strategy.hit(item, identifier):
                return
            stats = await strategy.get_window_stats(item, identifier)
        except (StorageError, RedisError, OSError) as exc:
            raise ServiceUnavailable("Rate limiting is unavailable; try again shortly") from exc
        raise RateLimited(retry_after=math.ceil(stats.reset_time - time.time()))

    async def reset(self, key: str, limit: str | RateLimitItem) -> None:
        """Forget the hits on `key` (e.g. after a successful login)."""
        item = parse_limit(limit) if isinstance(limit, str) else limit
        try:
            await self._strategy(item).clear(item, _hash_key(key))
        except (StorageError, RedisError, OSError) as exc:
            raise ServiceUnavailable("Rate limiting is unavailable; try again shortly") from exc

    async def attempt(self, key: str, backoff: Backoff) -> None:
        """Count one attempt on `key`; raise `RateLimited` while a back-off delay runs.

        Past the free attempts, the attempt that finds no delay running opens the next one
        (and goes ahead); attempts made while it runs are refused and not counted. Opening
        is an atomic increment, so of concurrent attempts only one goes ahead.
        """
        if not self.enabled:
            return
        attempts_key, pause_key = _backoff_keys(key)
        try:
            if await self.storage.get(pause_key):
                raise RateLimited(retry_after=await self._seconds_left(pause_key))
            attempts = await self.storage.incr(attempts_key, backoff.window_seconds)
            if attempts <= backoff.free_attempts:
                return
            if await self.storage.incr(pause_key, backoff.delay_after(attempts)) == 1:
                return
            raise RateLimited(retry_after=await self._seconds_left(pause_key))
        except (StorageError, RedisError, OSError) as exc:
            raise ServiceUnavailable("Rate limiting is unavailable; try again shortly") from exc

    async def forget_attempts(self, key: str) -> None:
        """End the back-off series of `key` (its count and any running delay)."""
        if not self.enabled:
            return
        try:
            for storage_key in _backoff_keys(key):
                await self.storage.clear(storage_key)
        except (StorageError, RedisError, OSError) as exc:
            raise ServiceUnavailable("Rate limiting is unavailable; try again shortly") from exc

    async def _seconds_left(self, storage_key: str) -> int:
        return max(1, math.ceil(await self.storage.get_expiry(storage_key) - time.time()))

    async def close(self) -> None:
        timer = getattr(self.storage, "timer", None)  # MemoryStorage's expiry task
        if timer is not None and not timer.done():
            timer.cancel()


@lru_cache(maxsize=256)
def parse_limit(limit: str) -> RateLimitItem:
    """`"5/minute"`, `"30 per hour"`, ... (the `limits` notation); ValueError when invalid."""
    return parse(limit)


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _backoff_keys(key: str) -> tuple[str, str]:
    identifier = _hash_key(key)
    return f"backoff/{identifier}/attempts", f"backoff/{identifier}/pause"


def create_rate_limiter(settings: Settings, redis: Redis | None) -> RateLimiter:
    storage: Storage
    if redis is None or settings.redis_url is None:
        storage = MemoryStorage()
    else:
        storage = RedisStorage(
            _limits_uri(settings.redis_url),
            implementation="redispy",  # redis-py 8, shared with the rest of the app
            key_prefix=settings.redis_key_prefix + "ratelimit",
            wrap_exceptions=True,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
    return RateLimiter(storage, enabled=settings.rate_limit_enabled)


def _limits_uri(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


# --- client IP ---------------------------------------------------------------------------

Network = IPv4Network | IPv6Network


@lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def client_ip(request: Request) -> str:
    """The socket peer, or, behind a trusted proxy, X-Forwarded-For's right-most untrusted hop.

    Anyone else's X-Forwarded-For is ignored: only hops appended by proxies we trust
    (`TRUSTED_PROXIES`, addresses or CIDR ranges) are believed.
    """
    peer = request.client.host if request.client else ""
    settings = services_of(request).settings
    networks = _networks(tuple(settings.trusted_proxies))
    if not networks or not _is_trusted(peer, networks):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    nearest = peer
    for hop in reversed(hops):
        try:
            address = str(ip_address(hop))
        except ValueError:
            return nearest  # garbage left of here was written by the client, not a proxy
        if not _is_trusted(address, networks):
            return address
        nearest = address
    return nearest


# --- FastAPI dependency ------------------------------------------------------------------


def get_rate_limiter(request: Request) -> RateLimiter:
    return services_of(request).rate_limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


def rate_limit(
    limit: str, *, key: KeyFunction | None = None, name: str | None = None
) -> Callable[[Request], Awaitable[None]]:
    """A dependency counting one hit per request on `name|client-ip[|key(request)]`.

    `name` defaults to the route's method and path, so two routes never share a counter;
    `key` adds parts (e.g. the submitted email) to the client IP.
    """
    item = parse_limit(limit)

    async def dependency(request: Request) -> None:
        route = request.scope.get("route")
        scope_name = name or f"{request.method} {getattr(route, 'path', request.url.path)}"
        parts = [scope_name, client_ip(request)]
        if key is not None:
            extra = key(request)
            parts.append(await extra if inspect.isawaitable(extra) else extra)
        await get_rate_limiter(request).hit("|".join(parts), item)

    return dependency
