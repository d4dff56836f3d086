"""The usage counters behave the same in memory and in Redis; Redis ones are shared."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.plans import usage
from tenantry.modules.plans.counters import Counts, MemoryUsage, RedisUsage, UsageStore
from tenantry.modules.plans.usage import usage_bound
from tenantry.services import services_of
from tests.conftest import RUN_ID, TEST_REDIS_URL, client_for
from tests.tenant_helpers import Org, Tenants

# A past day: only the stores of these tests write its rows (the app's own store counts today).
DAY = (utcnow() - dt.timedelta(days=2)).date()


class Processes:
    """`count()` makes one store per "process"; Redis ones share a prefix and nothing else."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"tenantry-test-{RUN_ID}:usage-{uuid.uuid4().hex[:8]}:"
        self.clients: list[Redis] = []

    def store(self) -> UsageStore:
        if self.kind == "memory":
            return MemoryUsage()
        client = Redis.from_url(TEST_REDIS_URL)
        self.clients.append(client)
        return RedisUsage(client, self.prefix)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
async def processes(request: pytest.FixtureRequest) -> AsyncIterator[Processes]:
    made = Processes(request.param)
    try:
        yield made
    finally:
        await made.close()


async def _day(tenants: Tenants, org: Org, store: UsageStore) -> dict[str, Any]:
    async with tenants.app.state.database.transaction() as session:
        bind_tenant(session, TenantContext.system(org.id))
        [row] = await usage.daily(session, org.id, DAY, DAY, store=store)
        return row


async def _flush(tenants: Tenants, store: UsageStore) -> int:
    # As the worker runs it: a plain session (flush commits each organization-day itself).
    async with tenants.app.state.database.session() as session:
        flushed = await usage.flush(session, store=store)
        await session.commit()
        return flushed


async def test_pending_counts_show_before_a_flush_and_are_kept_once_flushed(
    tenants: Tenants, processes: Processes
) -> None:
    org, store = await tenants.org(), processes.store()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for user in (alice, alice, bob, None):
        await store.request(org.id, DAY, user)
    store.records(org.id, DAY, 3)
    pending = await _day(tenants, org, store)
    assert (pending["requests"], pending["active_users"], pending["records_created"]) == (4, 2, 3)
    assert await _flush(tenants, store) == 1
    assert await _day(tenants, org, store) == pending
    assert await _flush(tenants, store) == 0  # taken once: nothing left to add


async def test_a_user_seen_before_and_after_a_flush_is_one_active_user(
    tenants: Tenants, processes: Processes
) -> None:
    org, store = await tenants.org(), processes.store()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await store.request(org.id, DAY, alice)
    await _flush(tenants, store)
    await store.request(org.id, DAY, alice)
    await _flush(tenants, store)
    row = await _day(tenants, org, store)
    assert (row["requests"], row["active_users"]) == (2, 1)
    await store.request(org.id, DAY, bob)
    await _flush(tenants, store)
    row = await _day(tenants, org, store)
    assert (row["requests"], row["active_users"]) == (3, 2)


async def test_concurrent_takes_hand_out_every_count_exactly_once(
    tenants: Tenants, processes: Processes
) -> None:
    org = await tenants.org()
    counting, takers = processes.store(), [processes.store() for _ in range(4)]
    if processes.kind == "memory":  # one process: its flushes share its one store
        takers = [counting] * 4
    total = 0
    for _round in range(5):
        await asyncio.gather(*(counting.request(org.id, DAY, uuid.uuid4()) for _ in range(20)))
        await counting.settle()  # its periodic send, now
        results = await asyncio.gather(*(t.take() for t in takers))
        total += sum(r[(org.id, DAY)].requests for r in results if (org.id, DAY) in r)
    assert total == 100


async def test_concurrent_flushes_do_not_double_count(
    tenants: Tenants, processes: Processes
) -> None:
    org = await tenants.org()
    counting = processes.store()
    flushers = (
        [counting, counting]
        if processes.kind == "memory"
        else [processes.store(), processes.store()]
    )
    for _ in range(30):
        await counting.request(org.id, DAY, None)
    counting.records(org.id, DAY, 7)
    await counting.settle()
    await asyncio.gather(*(_flush(tenants, f) for f in flushers))
    row = await _day(tenants, org, counting)
    assert (row["requests"], row["records_created"]) == (30, 7)


async def test_redis_down_on_the_request_path_is_logged_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    store = RedisUsage(client, "tenantry-test-down:")
    try:
        with caplog.at_level(logging.WARNING, logger="tenantry.modules.plans.counters"):
            await store.request(uuid.uuid4(), DAY, uuid.uuid4())
            store.records(uuid.uuid4(), DAY, 2)
            await store.settle()
    finally:
        await client.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert any("usage counts not recorded yet" in m for m in messages), messages


async def test_requests_are_counted_without_a_redis_round_trip() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    store = RedisUsage(client, "tenantry-test-down:", interval=3600)
    org_id = uuid.uuid4()
    try:
        # Redis is unreachable: had a request waited for it, this would fail or stall.
        for _ in range(50):
            await asyncio.wait_for(store.request(org_id, DAY, uuid.uuid4()), timeout=0.05)
        store.records(org_id, DAY, 3)
        await store.settle()  # fails (logged): the counts wait for the next send
        assert store._counts[(org_id, DAY)] == Counts(requests=50, records_created=3)
        assert len(store._users[(org_id, DAY)]) == 50
    finally:
        if store._sender is not None:
            store._sender.cancel()
        await client.aclose()


@pytest.mark.services
async def test_two_app_processes_count_one_active_user_and_sum_their_requests(
    tenants: Tenants, build_app: Callable[..., Any]
) -> None:
    org = await tenants.org()
    other = await build_app()  # a second API process on the same database and Redis
    today = utcnow().date().isoformat()
    url = org.url(f"/usage?from={today}&to={today}")
    async with client_for(other) as second:
        for http in (tenants.client, second, second):
            response = await http.get(org.url("/projects"), headers=org.owner.headers)
            assert response.status_code == 200
        await services_of(tenants.app).usage.settle()  # what its next send (within 1 s) would do
        seen = await second.get(url, headers=org.owner.headers)
        [before] = seen.json()["data"]
        assert before["activeUsers"] == 1
        assert before["requests"] >= 4  # three lists and this read (plus the setup's)
        async with other.state.database.session() as session:
            await usage.flush(session)
            await session.commit()
        again = await tenants.client.get(url, headers=org.owner.headers)
        [after] = again.json()["data"]
        assert after["activeUsers"] == 1
        assert after["requests"] == before["requests"] + 1


async def test_the_worker_process_flushes_the_store_its_settings_ask_for(
    settings: Settings,
) -> None:
    database = Database(settings)
    try:
        async with usage_bound(database), database.transaction() as session:
            expected = RedisUsage if settings.redis_url else MemoryUsage
            assert isinstance(usage.store_of(session), expected)
    finally:
        await database.dispose()
