"""Cache contract: the in-process and the Redis implementation behave the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request
from redis.asyncio import Redis

from tenantry.core.cache import Cache, MemoryCache, RedisCache
from tenantry.core.errors import ServiceUnavailable
from tenantry.core.nearcache import NearCache
from tests.backends.conftest import BACKENDS, connect_test_redis
from tests.conftest import USES_REDIS, client_for


@pytest.fixture(params=BACKENDS)
async def cache(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Cache]:
    if request.param == "memory":
        implementation: Cache = MemoryCache()
        yield implementation
        await implementation.close()
        return
    client = connect_test_redis()
    yield RedisCache(client, key_prefix=key_prefix)
    await client.aclose()


async def test_get_returns_what_set_stored_and_none_for_missing_keys(cache: Cache) -> None:
    await cache.set("a", b"\x00bytes\xff")
    assert await cache.get("a") == b"\x00bytes\xff"
    assert await cache.get("missing") is None


async def test_get_many_answers_each_key_in_order(cache: Cache) -> None:
    await cache.set("one", b"1")
    await cache.set("three", b"3", ttl=60)
    assert await cache.get_many(["three", "missing", "one"]) == [b"3", None, b"1"]


async def test_add_sets_only_an_absent_or_expired_key(cache: Cache) -> None:
    # A revocation's tombstone must survive a concurrent fill from an older database read.
    await cache.set("tomb", b"revoked")
    assert await cache.add("tomb", b"ok", ttl=30) is False
    assert await cache.get("tomb") == b"revoked"
    assert await cache.add("fresh", b"ok", ttl=0.2) is True
    assert await cache.get("fresh") == b"ok"
    await asyncio.sleep(0.35)
    assert await cache.add("fresh", b"again", ttl=30) is True
    assert await cache.get("fresh") == b"again"


async def test_namespaces_keep_their_keys_apart(key_prefix: str) -> None:
    if not USES_REDIS:
        pytest.skip("Redis namespaces; in process each cache is its own dict")
    client = connect_test_redis()
    try:
        main, counts = (
            RedisCache(client, key_prefix=key_prefix, namespace=name)
            for name in ("cache", "counts")
        )
        await counts.set("count:x", b"1")
        assert await main.get("count:x") is None
        assert await main.delete_prefix("count") == 0
        assert await counts.get("count:x") == b"1"
    finally:
        await client.aclose()


async def test_json_values_round_trip(cache: Cache) -> None:
    value = {"name": "Acme", "seats": 3, "tags": ["x", "y"], "nested": {"ok": True}}
    await cache.set_json("org", value)
    assert await cache.get_json("org") == value
    assert await cache.get_json("absent") is None


async def test_entries_expire_after_their_ttl(cache: Cache) -> None:
    await cache.set("short", b"1", ttl=0.2)
    await cache.set("long", b"2", ttl=30)
    assert await cache.get("short") == b"1"
    await asyncio.sleep(0.35)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"2"


async def test_set_overwrites_and_clears_a_previous_ttl(cache: Cache) -> None:
    await cache.set("k", b"old", ttl=0.2)
    await cache.set("k", b"new")
    await asyncio.sleep(0.35)
    assert await cache.get("k") == b"new"


async def test_a_non_positive_ttl_is_refused(cache: Cache) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl=0)


async def test_add_sets_only_an_absent_key(cache: Cache) -> None:
    assert await cache.add("lease", b"mine", ttl=30)
    assert not await cache.add("lease", b"theirs", ttl=30)
    assert await cache.get("lease") == b"mine"


async def test_replace_if_writes_only_over_the_expected_value(cache: Cache) -> None:
    await cache.add("k", b"lease-1", ttl=30)
    assert not await cache.replace_if("k", b"lease-2", b"stale", ttl=30)
    assert await cache.get("k") == b"lease-1"
    assert await cache.replace_if("k", b"lease-1", b"fresh", ttl=30)
    assert await cache.get("k") == b"fresh"
    await cache.delete("k")  # an invalidation between the lease and the write
    assert not await cache.replace_if("k", b"fresh", b"late", ttl=30)
    assert await cache.get("k") is None


async def test_delete_removes_one_key_only(cache: Cache) -> None:
    await cache.set("one", b"1")
    await cache.set("two", b"2")
    await cache.delete("one")
    await cache.delete("never-existed")
    assert await cache.get("one") is None
    assert await cache.get("two") == b"2"


async def test_delete_prefix_removes_exactly_the_keys_under_the_prefix(cache: Cache) -> None:
    for i in range(5):
        await cache.set(f"org:1:member:{i}", b"m")
    await cache.set("org:10:member:0", b"other org")
    await cache.set("org:1", b"the org itself")
    assert await cache.delete_prefix("org:1:") == 5
    assert await cache.get("org:1:member:3") is None
    assert await cache.get("org:10:member:0") == b"other org"
    assert await cache.get("org:1") == b"the org itself"


async def test_delete_prefix_treats_glob_characters_literally(cache: Cache) -> None:
    await cache.set("a*b:1", b"x")
    await cache.set("aXb:1", b"y")
    assert await cache.delete_prefix("a*") == 1
    assert await cache.get("aXb:1") == b"y"


async def test_memory_cache_evicts_the_least_recently_used_entry_past_its_bound() -> None:
    small = MemoryCache(max_entries=2)
    await small.set("a", b"1")
    await small.set("b", b"2")
    await small.get("a")
    await small.set("c", b"3")
    assert await small.get("b") is None
    assert await small.get("a") == b"1"
    assert await small.get("c") == b"3"


@pytest.mark.services
async def test_redis_keys_live_under_the_configured_prefix(
    redis_client: Redis, key_prefix: str
) -> None:
    cache = RedisCache(redis_client, key_prefix=key_prefix)
    await cache.set("probe", b"v", ttl=60)
    assert await redis_client.get(f"{key_prefix}cache:probe") == b"v"
    assert 0 < await redis_client.pttl(f"{key_prefix}cache:probe") <= 60_000


async def test_redis_down_raises_service_unavailable(dead_redis: Redis) -> None:
    cache = RedisCache(dead_redis, key_prefix="x:")
    with pytest.raises(ServiceUnavailable):
        await cache.get("k")
    with pytest.raises(ServiceUnavailable):
        await cache.set("k", b"v")
    with pytest.raises(ServiceUnavailable):
        await cache.delete_prefix("k")


async def test_a_route_using_the_cache_answers_503_when_redis_is_down(build_app) -> None:
    app: FastAPI = await build_app(redis_url="redis://127.0.0.1:1/0")
    # Redis-backed, with membership and session facts copied in process (core/nearcache.py).
    assert isinstance(app.state.cache, NearCache)

    @app.get("/probe-cache")
    async def probe(request: Request) -> dict[str, str]:
        await request.app.state.cache.get("anything")
        return {"ok": "yes"}

    async with client_for(app) as http:
        response = await http.get("/probe-cache")
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


async def test_the_app_uses_the_memory_cache_without_redis_url(build_app) -> None:
    app: FastAPI = await build_app(redis_url=None)
    assert isinstance(app.state.cache, MemoryCache)
