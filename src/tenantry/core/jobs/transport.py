"""How a worker learns that a job is waiting: embedded (in-process wake-up) or Redis.

The transport carries job ids only; the `jobs` table is the truth. A lost notification
costs latency, never a job: workers also claim overdue rows from the table themselves.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from tenantry.config import Settings
from tenantry.core.db import Database, Wired

log = logging.getLogger("tenantry.jobs")

# How far back (Redis time) a consumer group recreated after a Redis restart starts reading.
REGROUP_LOOKBACK_MS = 60_000
Listener = Callable[[Sequence[uuid.UUID]], None]


class JobTransport(Protocol):
    """Tell workers about job ids; optionally deliver ids to this process's worker."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def notify(self, job_ids: list[uuid.UUID]) -> None: ...

    def deliveries(self) -> AsyncIterator[tuple[uuid.UUID, Callable[[], Awaitable[None]]]] | None:
        """Ids pushed to this process, each with its ack; None when workers only poll."""
        ...

    def add_listener(self, listener: Listener) -> None: ...


class EmbeddedTransport:
    """Same-process wake-up: the worker inside `tenantry serve` polls the table."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()

    async def notify(self, job_ids: list[uuid.UUID]) -> None:
        if job_ids:
            for listener in list(self._listeners):
                listener(job_ids)

    def deliveries(self) -> AsyncIterator[tuple[uuid.UUID, Callable[[], Awaitable[None]]]] | None:
        return None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)


class RedisTransport:
    """taskiq-redis `RedisStreamBroker`: a stream, one consumer group, acks; ids only."""

    def __init__(self, settings: Settings, *, consumer_count: int = 4) -> None:
        from taskiq_redis import RedisStreamBroker

        assert settings.redis_url is not None
        lease_ms = int(settings.jobs_lease_seconds * 1000)
        self.broker = RedisStreamBroker(
            settings.redis_url,
            queue_name=f"{settings.redis_key_prefix}jobs",
            consumer_group_name=f"{settings.redis_key_prefix}workers",
            maxlen=100_000,
            approximate=True,
            # Above the lease: our lease (not Redis) decides when a job is taken over.
            idle_timeout=max(2 * lease_ms, 60_000),
            xread_block=1000,
            xread_count=consumer_count,
            unacknowledged_lock_timeout=5,
            socket_connect_timeout=5,  # an unreachable Redis must not hang start-up
        )
        self._listeners: list[Listener] = []
        self._started = False

    async def start(self) -> None:
        await self.broker.startup()
        self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.broker.shutdown()

    async def notify(self, job_ids: list[uuid.UUID]) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from taskiq import BrokerMessage

        for job_id in job_ids:
            text = str(job_id)
            message = BrokerMessage(
                task_id=text, task_name="tenantry.job", message=text.encode(), labels={}
            )
            try:
                await self.broker.kick(message)
            except RedisConnectionError:
                # After a Redis restart every pooled connection is dead, and the first use
                # of each fails; the pool has dropped this one, so one retry gets a fresh one.
                # (A connect timeout is a TimeoutError: not retried, a request waits once.)
                await self.broker.kick(message)

    def deliveries(self) -> AsyncIterator[tuple[uuid.UUID, Callable[[], Awaitable[None]]]] | None:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[tuple[uuid.UUID, Callable[[], Awaitable[None]]]]:
        from redis.exceptions import ResponseError

        while True:
            try:
                async for message in self.broker.listen():
                    try:
                        job_id = uuid.UUID(bytes(message.data).decode())
                    except ValueError:
                        log.warning("dropping a malformed message from the job stream")
                        await _ack(message.ack)
                        continue
                    yield job_id, _acker(message.ack)
            except ResponseError as exc:
                if not str(exc).startswith("NOGROUP"):
                    raise
                # Redis lost the group (a restart without persistence, a flush): the group is
                # only declared at start, so without this every read fails until a restart.
                log.warning("job stream consumer group missing; recreating it")
                await self.ensure_group()

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists.

        A recreated group starts `REGROUP_LOOKBACK_MS` back in Redis's own time, not at `$`:
        ids added since the restart, before any worker noticed, are delivered too. Older
        ids are not replayed (a persisted stream may hold 100,000 of them); the workers'
        table poll has claimed those already. Replaying an id is harmless: claiming is by
        id and only a queued row is claimed.
        """
        from redis.asyncio import Redis
        from redis.exceptions import ResponseError

        async with Redis(connection_pool=self.broker.connection_pool) as client:
            seconds, micros = await client.time()
            start = max(seconds * 1000 + micros // 1000 - REGROUP_LOOKBACK_MS, 0)
            try:
                await client.xgroup_create(
                    self.broker.queue_name,
                    self.broker.consumer_group_name,
                    id=f"{start}-0",
                    mkstream=True,
                )
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):  # another worker was first: fine
                    raise

    def add_listener(self, listener: Listener) -> None:
        """Ids reach this process's worker through the stream; local listeners are unused."""
        self._listeners.append(listener)


def _acker(ack: object) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await _ack(ack)

    return run


async def _ack(ack: object) -> None:
    if callable(ack):
        outcome = ack()
        if hasattr(outcome, "__await__"):
            await outcome


def build_transport(settings: Settings) -> EmbeddedTransport | RedisTransport:
    if settings.redis_url is None:
        return EmbeddedTransport()
    return RedisTransport(settings, consumer_count=settings.jobs_concurrency)


TRANSPORT: Wired[JobTransport] = Wired("job transport")


def bind_transport(database: Database, transport: JobTransport | None) -> None:
    """Every session of `database` hands `enqueue` this transport (None: no transport)."""
    database.wiring.provide(TRANSPORT, transport)
