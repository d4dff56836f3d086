"""Event bus contract: the in-process and the Redis bus behave the same (core/events.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from tenantry.core.errors import ServiceUnavailable
from tenantry.core.events import (
    EventBus,
    LocalEventBus,
    Outgoing,
    RedisEventBus,
    Subscription,
    format_event_id,
)
from tenantry.services import services_of
from tests.backends.conftest import BACKENDS, DEAD_REDIS_URL, connect_test_redis

SIZE = 10


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        local = LocalEventBus(buffer_size=SIZE, buffer_seconds=3600)
        yield local
        await local.close()
        return
    client = connect_test_redis()
    remote = RedisEventBus(
        client, connect_test_redis(), key_prefix=key_prefix, buffer_size=SIZE, buffer_seconds=3600
    )
    yield remote
    await remote.close()
    await client.aclose()


def _event(n: int) -> Outgoing:
    return Outgoing("task.updated", "tasks:read", {"n": n})


async def _live(subscription: Subscription, count: int) -> list[int]:
    found = []
    for _ in range(count):
        event = await subscription.next(5)
        assert event is not None, f"only {found}"
        found.append(orjson.loads(event.data)["n"])
    return found


async def test_subscribers_receive_their_organizations_events_in_order(bus: EventBus) -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    async with bus.subscribe(mine, None) as first, bus.subscribe(mine, None) as second:
        await bus.publish(other, [_event(99)])
        await bus.publish(mine, [_event(1), _event(2)])
        await bus.publish(mine, [_event(3)])
        assert await _live(first, 3) == [1, 2, 3]
        assert await _live(second, 3) == [1, 2, 3]
        assert await first.next(0.2) is None  # nothing of the other organization


async def test_a_replay_gives_what_followed_the_id_then_live_events(bus: EventBus) -> None:
    org = uuid.uuid4()
    async with bus.subscribe(org, None) as subscription:
        await bus.publish(org, [_event(n) for n in range(1, 6)])
        events = []
        for _ in range(5):
            event = await subscription.next(5)
            assert event is not None
            events.append(event)
    resume = format_event_id(events[1].id)
    async with bus.subscribe(org, resume) as again:
        assert not again.reset
        assert [orjson.loads(e.data)["n"] for e in again.take_replay()] == [3, 4, 5]
        await bus.publish(org, [_event(6)])
        assert await _live(again, 1) == [6]


async def test_an_id_past_the_buffer_or_unknown_resets(bus: EventBus) -> None:
    org = uuid.uuid4()
    async with bus.subscribe(org, None) as subscription:
        await bus.publish(org, [_event(0)])
        first = await subscription.next(5)
        assert first is not None
        await bus.publish(org, [_event(n) for n in range(1, SIZE + 3)])
    for last in (format_event_id(first.id), "garbage", "99999999999999-0"):
        async with bus.subscribe(org, last) as again:
            assert again.reset, last
            assert again.take_replay() == []
    async with bus.subscribe(uuid.uuid4(), "1-0") as unknown_org:
        assert unknown_org.reset


async def test_a_subscriber_that_falls_behind_the_buffer_is_marked_lagged(
    bus: EventBus,
) -> None:
    org = uuid.uuid4()
    async with bus.subscribe(org, None) as slow:
        for n in range(SIZE + 2):
            await bus.publish(org, [_event(n)])
        for _ in range(50):
            if slow.lagged:
                break
            await _sleep()
        assert slow.lagged
        assert await slow.next(0.1) is None


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.02)


async def test_redis_down_is_service_unavailable_for_subscribe(key_prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    reader = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    bus = RedisEventBus(client, reader, key_prefix=key_prefix, buffer_size=10, buffer_seconds=60)
    try:
        await bus.publish(uuid.uuid4(), [_event(1)])  # after commit: logged, not raised
        with pytest.raises(ServiceUnavailable):
            async with bus.subscribe(uuid.uuid4(), None):
                pass
    finally:
        await bus.close()
        await client.aclose()


async def test_the_app_picks_the_bus_from_redis_url(build_app) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(services_of(await build_app(redis_url=None)).events, LocalEventBus)
    assert isinstance(services_of(await build_app(redis_url=DEAD_REDIS_URL)).events, RedisEventBus)


async def test_the_local_bus_forgets_quiet_organizations_and_still_resets_their_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tenantry.core.events as events

    bus = LocalEventBus(buffer_size=SIZE, buffer_seconds=60)
    quiet, busy = uuid.uuid4(), uuid.uuid4()
    await bus.publish(quiet, [_event(1)])
    kept = bus._buffers[quiet].events[0].id
    later = events._now_ms() + 61_000
    monkeypatch.setattr(events, "_now_ms", lambda: later)  # an hour (here a minute) later
    monkeypatch.setattr(events, "SWEEP_SECONDS", 0.0)
    await bus.publish(busy, [_event(2)])
    assert quiet not in bus._buffers
    async with bus.subscribe(quiet, format_event_id(kept)) as again:
        assert again.reset
