"""Rate limiter contract (memory and Redis storage), its HTTP dependency and Redis-down → 503."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import Depends, FastAPI, Request
from limits.aio.storage import MemoryStorage, RedisStorage

from tenantry.core.errors import RateLimited, ServiceUnavailable
from tenantry.core.ratelimit import RateLimiter, create_rate_limiter, rate_limit
from tests.backends.conftest import BACKENDS, DEAD_REDIS_URL, connect_test_redis
from tests.conftest import client_for


@pytest.fixture(params=BACKENDS)
async def limiter(
    request: pytest.FixtureRequest, make_settings, key_prefix: str
) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        settings = make_settings(redis_url=None)
        memory = create_rate_limiter(settings, None)
        yield memory
        await memory.close()
        return
    from tests.conftest import TEST_REDIS_URL

    settings = make_settings(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    client = connect_test_redis()
    yield create_rate_limiter(settings, client)
    await client.aclose()


def unique_key() -> str:
    return f"test|{uuid.uuid4().hex}"


async def test_hits_within_the_limit_pass_and_the_next_one_is_rate_limited(
    limiter: RateLimiter,
) -> None:
    key = unique_key()
    for _ in range(3):
        await limiter.hit(key, "3/minute")
    with pytest.raises(RateLimited) as raised:
        await limiter.hit(key, "3/minute")
    retry_after = int(raised.value.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert raised.value.status_code == 429


async def test_keys_are_counted_separately(limiter: RateLimiter) -> None:
    first, second = unique_key(), unique_key()
    await limiter.hit(first, "1/minute")
    await limiter.hit(second, "1/minute")
    with pytest.raises(RateLimited):
        await limiter.hit(first, "1/minute")


async def test_the_window_moves_so_hits_are_allowed_again_after_it(limiter: RateLimiter) -> None:
    key = unique_key()
    await limiter.hit(key, "2/second")
    await limiter.hit(key, "2/second")
    with pytest.raises(RateLimited) as raised:
        await limiter.hit(key, "2/second")
    assert raised.value.headers["Retry-After"] == "1"
    await asyncio.sleep(1.1)
    await limiter.hit(key, "2/second")


async def test_large_limits_use_the_sliding_window_counter_and_still_limit(
    limiter: RateLimiter,
) -> None:
    key = unique_key()
    for _ in range(1001):
        await limiter.hit(key, "1001/hour")
    with pytest.raises(RateLimited):
        await limiter.hit(key, "1001/hour")


async def test_reset_forgets_previous_hits(limiter: RateLimiter) -> None:
    key = unique_key()
    await limiter.hit(key, "1/minute")
    await limiter.reset(key, "1/minute")
    await limiter.hit(key, "1/minute")


async def test_a_disabled_limiter_never_limits(make_settings) -> None:
    limiter = create_rate_limiter(make_settings(redis_url=None, rate_limit_enabled=False), None)
    key = unique_key()
    for _ in range(5):
        await limiter.hit(key, "1/minute")


def test_the_storage_follows_redis_url(make_settings) -> None:
    embedded = create_rate_limiter(make_settings(redis_url=None), None)
    assert isinstance(embedded.storage, MemoryStorage)
    client = connect_test_redis()
    with_redis = create_rate_limiter(make_settings(redis_url=DEAD_REDIS_URL), client)
    assert isinstance(with_redis.storage, RedisStorage)


async def test_redis_down_raises_service_unavailable_never_lets_the_hit_through(
    make_settings,
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    limiter = create_rate_limiter(make_settings(redis_url=DEAD_REDIS_URL), client)
    try:
        with pytest.raises(ServiceUnavailable):
            await limiter.hit(unique_key(), "5/minute")
    finally:
        await client.aclose()


def _add_limited_route(app: FastAPI, path: str, limit: str, **kwargs) -> None:
    @app.post(path, dependencies=[Depends(rate_limit(limit, **kwargs))])
    async def limited() -> dict[str, bool]:
        return {"ok": True}


async def test_a_limited_route_answers_429_with_retry_after_in_the_error_envelope(
    build_app,
) -> None:
    app = await build_app()
    _add_limited_route(app, "/limited-a", "2/minute")
    async with client_for(app) as http:
        assert (await http.post("/limited-a")).status_code == 200
        assert (await http.post("/limited-a")).status_code == 200
        response = await http.post("/limited-a")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def test_two_routes_with_the_same_limit_do_not_share_a_counter(build_app) -> None:
    app = await build_app()
    _add_limited_route(app, "/limited-b", "1/minute")
    _add_limited_route(app, "/limited-c", "1/minute")
    async with client_for(app) as http:
        assert (await http.post("/limited-b")).status_code == 200
        assert (await http.post("/limited-c")).status_code == 200
        assert (await http.post("/limited-b")).status_code == 429


async def test_key_parts_from_the_request_split_the_counter(build_app) -> None:
    app = await build_app()

    async def by_email(request: Request) -> str:
        return str((await request.json())["email"]).lower()

    _add_limited_route(app, "/limited-d", "1/minute", key=by_email)
    async with client_for(app) as http:
        assert (await http.post("/limited-d", json={"email": "a@x.io"})).status_code == 200
        assert (await http.post("/limited-d", json={"email": "b@x.io"})).status_code == 200
        assert (await http.post("/limited-d", json={"email": "A@x.io"})).status_code == 429


async def test_a_limited_route_answers_503_when_redis_is_down(build_app) -> None:
    app = await build_app(redis_url=DEAD_REDIS_URL)
    _add_limited_route(app, "/limited-e", "100/minute")
    async with client_for(app) as http:
        response = await http.post("/limited-e")
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


async def test_rate_limit_enabled_false_turns_route_limits_off(build_app) -> None:
    app = await build_app(rate_limit_enabled=False)
    _add_limited_route(app, "/limited-f", "1/minute")
    async with client_for(app) as http:
        for _ in range(3):
            assert (await http.post("/limited-f")).status_code == 200
        ready = await http.get("/health/ready")
    assert ready.json()["rateLimit"] == "disabled"


@pytest.mark.services
async def test_redis_counters_live_under_the_configured_prefix(make_settings, key_prefix) -> None:
    from tests.conftest import TEST_REDIS_URL

    client = connect_test_redis()
    try:
        limiter = create_rate_limiter(
            make_settings(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix), client
        )
        await limiter.hit("someone@example.com", "5/minute")
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
    finally:
        await client.aclose()
    assert keys
    assert all(key.startswith(f"{key_prefix}ratelimit".encode()) for key in keys)
    assert not any(b"someone" in key for key in keys)  # keys are hashed


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_escape_the_limit(
    build_app,
) -> None:
    app = await build_app()  # no trusted proxies: X-Forwarded-For is the client's own claim
    _add_limited_route(app, "/limited-g", "1/minute")
    async with client_for(app) as http:
        assert (
            await http.post("/limited-g", headers={"X-Forwarded-For": "1.1.1.1"})
        ).status_code == 200
        spoofed = await http.post("/limited-g", headers={"X-Forwarded-For": "2.2.2.2"})
    assert spoofed.status_code == 429


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_counter(build_app) -> None:
    app = await build_app(trusted_proxies="127.0.0.1")  # the test client's peer address
    _add_limited_route(app, "/limited-h", "1/minute")
    async with client_for(app) as http:
        first = await http.post("/limited-h", headers={"X-Forwarded-For": "198.51.100.1"})
        second = await http.post("/limited-h", headers={"X-Forwarded-For": "198.51.100.2"})
        again = await http.post("/limited-h", headers={"X-Forwarded-For": "9.9.9.9, 198.51.100.1"})
    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)
