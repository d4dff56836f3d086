"""Publish/subscribe for real-time updates: in-process by default, Redis with `REDIS_URL`.

Messages are JSON values; delivery is at-most-once to the subscribers connected at the
time of publishing (durable work goes through jobs, not events). Use::

    async with events.subscribe("org:42") as subscription:
        async for message in subscription:
            ...

The subscription is active when `subscribe` returns from `__aenter__`, so a message
published after that is delivered. A slow in-process subscriber loses the oldest
messages past `MAX_PENDING` rather than growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import defaultdict
from types import TracebackType
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from tenantry.config import Settings
from tenantry.core.cache import redis_errors_as_unavailable
from tenantry.core.errors import ServiceUnavailable

MAX_PENDING = 1000
POLL_SECONDS = 1.0
log = structlog.get_logger("tenantry.events")


class Subscription(ABC):
    """An async iterator of the messages published on one channel, used as a context."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def __aenter__(self) -> Subscription:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        return await self._next(None)

    async def get(self, max_wait: float | None = None) -> Any:
        """The next message; `TimeoutError` when none comes within `max_wait` seconds."""
        return await self._next(max_wait)

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _next(self, max_wait: float | None) -> Any: ...

    @abstractmethod
    async def close(self) -> None: ...


class Events(ABC):
    @abstractmethod
    async def publish(self, channel: str, message: Any) -> int:
        """Send `message` (JSON-serialisable) to `channel`; returns how many received it."""

    @abstractmethod
    def subscribe(self, channel: str) -> Subscription: ...

    async def close(self) -> None:
        """Release what the broker owns."""
        return


def _check_channel(channel: str) -> str:
    if not channel or len(channel) > 200 or any(ch.isspace() for ch in channel):
        raise ValueError("a channel is a short non-empty name without whitespace")
    return channel


class _LocalSubscription(Subscription):
    def __init__(self, broker: LocalEvents, channel: str) -> None:
        super().__init__(channel)
        self._broker = broker
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=MAX_PENDING)

    async def _start(self) -> None:
        self._broker.subscribers[self.channel].add(self)

    async def _next(self, max_wait: float | None) -> Any:
        return orjson.loads(await asyncio.wait_for(self.queue.get(), max_wait))

    def deliver(self, payload: bytes) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            log.warning("event dropped for a slow subscriber", channel=self.channel)
        self.queue.put_nowait(payload)

    async def close(self) -> None:
        subscribers = self._broker.subscribers.get(self.channel)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self._broker.subscribers[self.channel]


class LocalEvents(Events):
    """Subscribers in this process only (embedded mode: one `serve` process)."""

    def __init__(self) -> None:
        self.subscribers: defaultdict[str, set[_LocalSubscription]] = defaultdict(set)

    async def publish(self, channel: str, message: Any) -> int:
        payload = orjson.dumps(message)
        subscribers = list(self.subscribers.get(_check_channel(channel), ()))
        for subscriber in subscribers:
            subscriber.deliver(payload)
        return len(subscribers)

    def subscribe(self, channel: str) -> Subscription:
        return _LocalSubscription(self, _check_channel(channel))

    async def close(self) -> None:
        self.subscribers.clear()


class _RedisSubscription(Subscription):
    def __init__(self, redis: Redis, channel: str, redis_channel: str) -> None:
        super().__init__(channel)
        self._redis = redis
        self._redis_channel = redis_channel
        self._pubsub: PubSub | None = None

    async def _start(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            async with redis_errors_as_unavailable("Events"):
                await pubsub.subscribe(self._redis_channel)
                # Wait for the server's confirmation: from then on publishes reach us.
                while True:
                    reply = await pubsub.get_message(timeout=5.0)
                    if reply is None:
                        raise ServiceUnavailable("Events are unavailable; try again shortly")
                    if reply["type"] == "subscribe":
                        break
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub

    async def _next(self, max_wait: float | None) -> Any:
        if self._pubsub is None:
            raise RuntimeError("use the subscription as `async with events.subscribe(...)`")
        loop = asyncio.get_running_loop()
        deadline = None if max_wait is None else loop.time() + max_wait
        async with redis_errors_as_unavailable("Events"):
            while True:
                # Bounded waits with get_message's own timeout rather than cancelling a
                # read from outside, which could cut a reply in half on this connection.
                wait = POLL_SECONDS
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - loop.time()))
                reply = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if reply is not None and reply["type"] == "message":
                    return orjson.loads(reply["data"])
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError

    async def close(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe()
            await pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisEvents(Events):
    """Redis PUBLISH/SUBSCRIBE under `REDIS_KEY_PREFIX + "events:"`; reaches every process."""

    def __init__(self, redis: Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix + "events:"

    async def publish(self, channel: str, message: Any) -> int:
        payload = orjson.dumps(message)
        async with redis_errors_as_unavailable("Events"):
            receivers: int = await self._redis.publish(
                self._prefix + _check_channel(channel), payload
            )
        return receivers

    def subscribe(self, channel: str) -> Subscription:
        return _RedisSubscription(self._redis, channel, self._prefix + _check_channel(channel))


def create_events(settings: Settings, redis: Redis | None) -> Events:
    if redis is None:
        return LocalEvents()
    return RedisEvents(redis, key_prefix=settings.redis_key_prefix)
