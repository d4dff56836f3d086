"""Pub/sub contract: the in-process and the Redis broker behave the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from tenantry.core.errors import ServiceUnavailable
from tenantry.core.events import MAX_PENDING, Events, LocalEvents, RedisEvents
from tenantry.services import services_of
from tests.backends.conftest import BACKENDS, DEAD_REDIS_URL, connect_test_redis


@pytest.fixture(params=BACKENDS)
async def events(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Events]:
    if request.param == "memory":
        broker: Events = LocalEvents()
        yield broker
        await broker.close()
        return
    client = connect_test_redis()
    yield RedisEvents(client, key_prefix=key_prefix)
    await client.aclose()


def channel() -> str:
    return f"org:{uuid.uuid4().hex}"


async def test_a_subscriber_receives_what_is_published_after_it_subscribed(events: Events) -> None:
    name = channel()
    async with events.subscribe(name) as subscription:
        assert await events.publish(name, {"type": "task.updated", "id": 7}) == 1
        await events.publish(name, ["second", 2])
        assert await subscription.get(max_wait=2) == {"type": "task.updated", "id": 7}
        assert await subscription.get(max_wait=2) == ["second", 2]


async def test_every_subscriber_of_a_channel_gets_each_message(events: Events) -> None:
    name = channel()
    async with events.subscribe(name) as first, events.subscribe(name) as second:
        assert await events.publish(name, "hello") == 2
        assert await first.get(max_wait=2) == "hello"
        assert await second.get(max_wait=2) == "hello"


async def test_messages_on_other_channels_are_not_delivered(events: Events) -> None:
    mine, other = channel(), channel()
    async with events.subscribe(mine) as subscription:
        await events.publish(other, "not for me")
        await events.publish(mine, "for me")
        assert await subscription.get(max_wait=2) == "for me"
        with pytest.raises(TimeoutError):
            await subscription.get(max_wait=0.2)


async def test_publishing_without_subscribers_reaches_nobody(events: Events) -> None:
    assert await events.publish(channel(), {"x": 1}) == 0


async def test_after_leaving_the_context_nothing_more_is_received(events: Events) -> None:
    name = channel()
    async with events.subscribe(name):
        pass
    assert await events.publish(name, "late") == 0


async def test_async_iteration_yields_messages_in_order(events: Events) -> None:
    name = channel()
    received: list[int] = []

    async with events.subscribe(name) as subscription:

        async def consume() -> None:
            async for message in subscription:
                received.append(message)
                if len(received) == 3:
                    return

        consumer = asyncio.create_task(consume())
        for number in range(3):
            await events.publish(name, number)
        await asyncio.wait_for(consumer, timeout=3)
    assert received == [0, 1, 2]


async def test_a_channel_name_with_whitespace_is_refused(events: Events) -> None:
    with pytest.raises(ValueError, match="channel"):
        await events.publish("org 1", "x")


async def test_a_slow_local_subscriber_keeps_only_the_newest_messages() -> None:
    broker = LocalEvents()
    async with broker.subscribe("busy") as subscription:
        for number in range(MAX_PENDING + 5):
            await broker.publish("busy", number)
        assert await subscription.get(max_wait=1) == 5


@pytest.mark.services
async def test_a_redis_subscriber_outwaits_the_socket_timeout_for_another_clients_message(
    key_prefix: str,
) -> None:
    publisher_client, subscriber_client = connect_test_redis(), connect_test_redis()
    try:
        publisher = RedisEvents(publisher_client, key_prefix=key_prefix)
        subscriber = RedisEvents(subscriber_client, key_prefix=key_prefix)
        async with subscriber.subscribe("shared") as subscription:

            async def publish_later() -> int:
                await asyncio.sleep(2.5)  # the clients' socket_timeout is 2 s
                return await publisher.publish("shared", {"n": 1})

            later = asyncio.create_task(publish_later())
            # Iteration waits without a deadline of its own (only this test's guard).
            assert await asyncio.wait_for(anext(subscription), 5) == {"n": 1}
            assert await later == 1
    finally:
        await publisher_client.aclose()
        await subscriber_client.aclose()


async def test_redis_down_is_service_unavailable_for_publish_and_subscribe() -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(DEAD_REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    broker = RedisEvents(client, key_prefix="x:")
    try:
        with pytest.raises(ServiceUnavailable):
            await broker.publish("c", 1)
        with pytest.raises(ServiceUnavailable):
            async with broker.subscribe("c"):
                pass
    finally:
        await client.aclose()


async def test_the_app_picks_the_broker_from_redis_url(build_app) -> None:
    assert isinstance(services_of(await build_app(redis_url=None)).events, LocalEvents)
    assert isinstance(services_of(await build_app(redis_url=DEAD_REDIS_URL)).events, RedisEvents)
