"""The near cache against a real Redis: what its subscription may and may not discard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tenantry.core.cache import MemoryCache
from tenantry.core.nearcache import HEARTBEAT_SECONDS, NearCache
from tests.backends.conftest import connect_test_redis

pytestmark = pytest.mark.services

PREFIX = "member:"


class SlowRemote(MemoryCache):
    """A remote whose reads take longer than a heartbeat interval."""

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        await asyncio.sleep(HEARTBEAT_SECONDS * 3)
        return await super().get_many(keys)


async def started(cache: NearCache) -> NearCache:
    await cache.start()
    for _ in range(100):
        if cache.trusted:
            return cache
        await asyncio.sleep(0.02)
    raise AssertionError("the subscription never came up")


@pytest.fixture
async def two_caches(key_prefix: str) -> AsyncIterator[tuple[NearCache, NearCache]]:
    redis = connect_test_redis()
    channel = f"{key_prefix}invalidations"
    caches = [
        NearCache(remote, redis, channel=channel, prefixes=(PREFIX,), stale_seconds=0.5)
        for remote in (SlowRemote(), MemoryCache())
    ]
    try:
        yield await started(caches[0]), await started(caches[1])
    finally:
        for cache in caches:
            await cache.close()
        await redis.aclose()


async def test_another_process_heartbeat_does_not_discard_a_fill_in_flight(
    two_caches: tuple[NearCache, NearCache],
) -> None:
    """The other cache beats (at least twice) while the slow read is in flight: the fill
    must still be kept, so the next read is served from the process."""
    cache, _other = two_caches
    assert await cache.get(f"{PREFIX}1") is None
    hits = cache.local_hits
    assert await cache.get(f"{PREFIX}1") is None
    assert cache.local_hits == hits + 1


async def test_an_invalidation_during_a_read_discards_its_fill(
    two_caches: tuple[NearCache, NearCache],
) -> None:
    """The guard the first test must not weaken: a write published by another process
    while a read is in flight keeps the read's (possibly stale) value out of the process."""
    cache, other = two_caches
    reading = asyncio.create_task(cache.get(f"{PREFIX}2"))
    await asyncio.sleep(HEARTBEAT_SECONDS)
    await other.delete(f"{PREFIX}2")
    assert await reading is None
    hits = cache.local_hits
    await cache.get(f"{PREFIX}2")
    assert cache.local_hits == hits, "a fill that raced an invalidation was kept"
