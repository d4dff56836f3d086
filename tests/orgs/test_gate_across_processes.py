"""Two app instances (two processes in production) sharing PostgreSQL and Redis.

The tenant gate keeps membership and revocation facts in each process (core/nearcache.py):
a warm request makes no Redis round trip. A logout, a member removal or a key revocation
served by app A must still stop access through app B within 1 s — the invalidation is
pushed over Redis pub/sub — and a B that lost its subscription must stop trusting its
copies instead of serving them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from tenantry.core.nearcache import NearCache
from tenantry.services import services_of
from tests.auth.test_revocation_authority import OwnRedis, own_redis  # noqa: F401
from tests.conftest import client_for
from tests.factories import api_key_headers, create_api_key
from tests.tasks.test_task_lists import count_statements
from tests.tenant_helpers import Tenants

pytestmark = pytest.mark.services

# NEAR_CACHE_STALE_SECONDS (0.5) plus the delivery of one request and one pub/sub message;
# doubled for a loaded 2-core CI machine. Without invalidation a copy lives 300 s.
BOUND_SECONDS = 2.0
BuildApp = Callable[..., Awaitable[FastAPI]]


def near_cache(app: FastAPI) -> NearCache:
    cache = services_of(app).cache
    assert isinstance(cache, NearCache)
    return cache


async def trusted(app: FastAPI) -> None:
    """Wait until the app's subscription is proven live (its first heartbeat came back)."""
    for _ in range(100):
        if near_cache(app).trusted:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the invalidation subscription never came up")


@asynccontextmanager
async def two_apps(
    build_app: BuildApp, **overrides: object
) -> AsyncIterator[tuple[Tenants, httpx.AsyncClient, FastAPI]]:
    app_a, app_b = await build_app(**overrides), await build_app(**overrides)
    async with client_for(app_a) as http_a, client_for(app_b) as http_b:
        await trusted(app_a)
        await trusted(app_b)
        yield Tenants(app_a, http_a), http_b, app_b


async def warm(http: httpx.AsyncClient, app: FastAPI, url: str, headers: dict[str, str]) -> None:
    """Two requests through B: the second one's gate facts come from B's memory.

    Only while B's subscription is live: a loaded machine can hold a heartbeat back past
    the staleness bound, and B then rightly asks Redis. So each attempt starts trusted, and
    a few are allowed; a gate that never serves from memory fails every one.
    """
    for _ in range(3):
        await trusted(app)
        assert (await http.get(url, headers=headers)).status_code == 200
        hits = near_cache(app).local_hits
        assert (await http.get(url, headers=headers)).status_code == 200
        if near_cache(app).local_hits > hits:
            return
    raise AssertionError("a warm request still asked Redis (3 attempts, each started trusted)")


async def refused_within(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], statuses: set[int]
) -> float:
    """Seconds until B refuses `url` with one of `statuses` (fails past the bound)."""
    started = time.monotonic()
    while True:
        status = (await http.get(url, headers=headers)).status_code
        elapsed = time.monotonic() - started
        if status in statuses:
            return elapsed
        assert status == 200, status
        assert elapsed < BOUND_SECONDS, f"still served {elapsed:.2f} s after the revocation"
        await asyncio.sleep(0.02)


async def test_a_logout_on_one_app_stops_the_token_on_the_other(build_app: BuildApp) -> None:
    async with two_apps(build_app) as (tenants, http_b, app_b):
        org = await tenants.org()
        url = org.url("/projects")
        await warm(http_b, app_b, url, org.owner.headers)
        response = await tenants.client.post(
            "/api/v1/auth/logout", json={"refreshToken": org.owner.refresh_token}
        )
        assert response.status_code == 204
        assert await refused_within(http_b, url, org.owner.headers, {401}) < BOUND_SECONDS


async def test_a_member_removed_on_one_app_is_refused_on_the_other(build_app: BuildApp) -> None:
    async with two_apps(build_app) as (tenants, http_b, app_b):
        org = await tenants.org()
        member = await org.join("member")
        url = org.url("/projects")
        await warm(http_b, app_b, url, member.headers)
        removed = await tenants.client.delete(
            org.url(f"/members/{member.id}"), headers=org.owner.headers
        )
        assert removed.status_code == 204, removed.text
        assert await refused_within(http_b, url, member.headers, {404}) < BOUND_SECONDS


async def test_a_key_revoked_on_one_app_is_refused_on_the_other(build_app: BuildApp) -> None:
    async with two_apps(build_app) as (tenants, http_b, app_b):
        org = await tenants.org()
        raw = await create_api_key(tenants.client, org.org, ["projects:read"])
        headers = api_key_headers(raw)
        url = org.url("/projects")
        await warm(http_b, app_b, url, headers)
        listed = await tenants.client.get(org.url("/api-keys"), headers=org.owner.headers)
        key_id = next(k["id"] for k in listed.json()["data"] if raw.startswith(k["prefix"]))
        revoked = await tenants.client.delete(
            org.url(f"/api-keys/{key_id}"), headers=org.owner.headers
        )
        assert revoked.status_code == 204, revoked.text
        assert await refused_within(http_b, url, headers, {401}) < BOUND_SECONDS


async def test_an_app_that_lost_its_subscription_does_not_trust_its_copies(
    build_app: BuildApp,
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    prefix = f"near-{uuid.uuid4().hex[:8]}:"
    async with two_apps(build_app, redis_url=own_redis.url, redis_key_prefix=prefix) as (
        tenants,
        http_b,
        app_b,
    ):
        org = await tenants.org()
        url = org.url("/projects")
        await warm(http_b, app_b, url, org.owner.headers)
        # Every subscriber of this test's own Redis is cut off: what A publishes now is lost.
        admin = Redis.from_url(own_redis.url)
        try:
            await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        finally:
            await admin.aclose()
        response = await tenants.client.post(
            "/api/v1/auth/logout", json={"refreshToken": org.owner.refresh_token}
        )
        assert response.status_code == 204
        assert await refused_within(http_b, url, org.owner.headers, {401}) < BOUND_SECONDS


async def mget_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def test_a_warm_request_reads_its_gate_facts_from_process_memory(
    build_app: BuildApp,
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    """Session fact, valid-after mark and membership: no Redis, no database for the gate."""
    app = await build_app(redis_url=own_redis.url)
    await trusted(app)
    async with client_for(app) as http:
        tenants = Tenants(app, http)
        org = await tenants.org()
        url = org.url(f"/projects/{(await org.project())['id']}")  # no list total to cache
        for _ in range(3):  # fills: the database once, Redis, then the process
            assert (await http.get(url, headers=org.owner.headers)).status_code == 200
        redis = services_of(app).redis
        assert redis is not None
        before = await mget_calls(redis)  # the gate's one Redis command (all its facts)
        with count_statements(services_of(app).database.engine) as statements:
            assert (await http.get(url, headers=org.owner.headers)).status_code == 200
        assert await mget_calls(redis) == before
        assert not [s for s in statements if "memberships" in s or "auth_sessions" in s]
