"""Real-time events of organizations: published after commit, buffered, fanned out.

What a committed change announces is an `Outgoing` event: its name (`task.updated`,
`job.progress`), the permission a subscriber needs to receive it, and its JSON data. Two
places publish, both after their transaction committed, so a rolled-back change never
announces anything:

- every audit entry (`modules/audit/service.py` calls `publish_after_commit` for the
  entries it writes: a change that is audited is announced, without a line of its own);
- every job state or progress change (core/jobs).

The bus gives each event an id that increases per organization (`<ms>-<seq>`, the shape
of a Redis stream id), keeps the last `EVENTS_BUFFER_SIZE` events (at most
`EVENTS_BUFFER_SECONDS` old) of each organization for replay, and hands them to the
subscriptions of this process:

- `LocalEventBus` (embedded mode, no Redis): everything in process memory;
- `RedisEventBus`: one Redis stream per organization (`XADD ... MAXLEN`) is the replay
  buffer and the transport; ONE reader task per process (`XREAD BLOCK` over the streams
  of the organizations someone here follows) fans out to the local subscriptions — one
  Redis connection per process, not per subscriber.

A subscription starts with `reset` (the `Last-Event-ID` given is older than the buffer,
or unknown: the client must refetch) or the `replay` of what came after it, then live
events; ids at or below the last one handed out are skipped, so a replay overlapping the
live feed yields every event once. A subscriber whose queue overflows is marked `lagged`
(its stream ends; the client reconnects with its last id and is replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from tenantry.config import Settings
from tenantry.core.db import Database, Wired, wiring_of
from tenantry.core.errors import ServiceUnavailable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("tenantry.events")

EventId = tuple[int, int]
ZERO_ID: EventId = (0, 0)
READ_BLOCK_MS = 5000
READ_COUNT = 500
RETRY_SECONDS = 0.5
SWEEP_SECONDS = 60.0  # how often the in-process bus drops the buffers of quiet organizations


def parse_event_id(text: str | None) -> EventId | None:
    """`"<ms>-<seq>"` → `(ms, seq)`; None for anything else."""
    if not text or len(text) > 40:
        return None
    ms, sep, seq = text.strip().partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


def format_event_id(value: EventId) -> str:
    return f"{value[0]}-{value[1]}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What a committed change announces (before the bus gives it an id)."""

    name: str  # `<entityType>.<action>` / `job.<state>`
    permission: str  # what a subscriber must hold to receive it
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One event of an organization, with its id and its SSE frame (serialised once)."""

    id: EventId
    name: str
    permission: str
    data: bytes  # JSON

    @property
    def frame(self) -> bytes:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (
            format_event_id(self.id).encode(),
            self.name.encode(),
            self.data,
        )


class EventSink(Protocol):
    """Where committed changes are announced (a bus; bound per Database, core/db.py)."""

    async def publish(self, org_id: uuid.UUID, events: Sequence[Outgoing]) -> None: ...


EVENTS: Wired[EventSink] = Wired("event sink")


def bind_events(database: Database, sink: EventSink | None) -> None:
    """Announce the committed changes of `database`'s sessions (and its jobs) to `sink`."""
    database.wiring.provide(EVENTS, sink)


def publish_after_commit(
    session: AsyncSession, org_id: uuid.UUID, events: Sequence[Outgoing]
) -> None:
    """Announce `events` of `org_id` once `session`'s transaction has committed.

    Rides on the unit of work's after-commit callbacks (core/routing.py): dropped on
    rollback. A session of a database without a bus (a script) announces nothing.
    """
    from tenantry.core.routing import after_commit

    sink = wiring_of(session).get(EVENTS)
    if sink is None or not events:
        return
    batch = list(events)

    async def publish() -> None:
        await sink.publish(org_id, batch)

    after_commit(session, publish)


def job_event(
    *,
    job_id: uuid.UUID,
    job_type: str,
    status: str,
    progress: int,
    message: str | None,
    name: str | None = None,
) -> Outgoing:
    """`job.<status>` (or `job.progress`) with the fields API.md names for job events."""
    return Outgoing(
        name=name or f"job.{status}",
        permission="jobs:read",
        data={
            "jobId": str(job_id),
            "type": job_type,
            "status": status,
            "progress": progress,
            "message": message,
        },
    )


@dataclass(eq=False)
class Subscription:
    """One stream's view of its organization: `reset` or `replay` first, then `next()`."""

    org_id: uuid.UUID
    max_pending: int
    reset: bool = False
    replay: list[Event] = field(default_factory=list)
    lagged: bool = False
    last_id: EventId = ZERO_ID
    _queue: deque[Event] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, events: Sequence[Event]) -> None:
        if self.lagged:
            return
        self._queue.extend(events)
        if len(self._queue) > self.max_pending:
            self.lagged = True  # the stream ends; the client resumes from its last id
            self._queue.clear()
        self._ready.set()

    def take_replay(self) -> list[Event]:
        """The replayed events (once), noting the last id so live duplicates are skipped."""
        events, self.replay = self.replay, []
        if events:
            self.last_id = max(self.last_id, events[-1].id)
        return events

    async def next(self, wait: float) -> Event | None:
        """The next live event not seen yet; None after `wait` seconds or when lagged."""
        deadline = asyncio.get_running_loop().time() + wait
        while not self.lagged:
            while self._queue:
                event = self._queue.popleft()
                if event.id > self.last_id:
                    self.last_id = event.id
                    return event
            self._ready.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), left)
        return None


class EventBus(ABC):
    """Publish events of an organization; subscribe to them in this process."""

    def __init__(self, *, buffer_size: int, buffer_seconds: float) -> None:
        self.buffer_size = buffer_size
        self.buffer_seconds = buffer_seconds
        self.subscribers: dict[uuid.UUID, set[Subscription]] = {}

    @abstractmethod
    async def publish(self, org_id: uuid.UUID, events: Sequence[Outgoing]) -> None: ...

    @contextlib.asynccontextmanager
    async def subscribe(
        self, org_id: uuid.UUID, last_event_id: str | None
    ) -> AsyncIterator[Subscription]:
        """A subscription, live from the moment this returns; `reset`/`replay` filled in."""
        subscription = Subscription(org_id, max_pending=self.buffer_size)
        self.subscribers.setdefault(org_id, set()).add(subscription)
        try:
            await self._follow(org_id)
            if last_event_id is not None:
                last = parse_event_id(last_event_id)
                replay = None if last is None else await self._replay(org_id, last)
                if replay is None:
                    subscription.reset = True
                else:
                    subscription.replay = replay
            yield subscription
        finally:
            subscribers = self.subscribers.get(org_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self.subscribers[org_id]
                    self._unfollow(org_id)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self.subscribers.values())

    def _deliver(self, org_id: uuid.UUID, events: Sequence[Event]) -> None:
        for subscription in list(self.subscribers.get(org_id, ())):
            subscription.deliver(events)

    def _too_old(self, last: EventId) -> bool:
        return last[0] < _now_ms() - int(self.buffer_seconds * 1000)

    async def _follow(self, org_id: uuid.UUID) -> None:
        """Make sure events of `org_id` reach this process from now on."""
        return

    def _unfollow(self, org_id: uuid.UUID) -> None:
        return

    @abstractmethod
    async def _replay(self, org_id: uuid.UUID, last: EventId) -> list[Event] | None:
        """The events after `last`, or None when some may be missing (→ reset)."""

    async def start(self) -> None:
        return

    async def close(self) -> None:
        self.subscribers.clear()


@dataclass
class _Buffer:
    events: deque[Event]
    floor: EventId  # everything at or below it is gone (or was before this process)


class LocalEventBus(EventBus):
    """One process (embedded mode): ids, buffers and fan-out in memory."""

    def __init__(self, *, buffer_size: int, buffer_seconds: float) -> None:
        super().__init__(buffer_size=buffer_size, buffer_seconds=buffer_seconds)
        self._boot: EventId = (_now_ms(), 0)  # ids from before this process are unknown
        self._last: EventId = self._boot
        self._buffers: dict[uuid.UUID, _Buffer] = {}
        self._swept_at = time.monotonic()

    def _next_id(self) -> EventId:
        ms = _now_ms()
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        return self._last

    def _buffer(self, org_id: uuid.UUID) -> _Buffer:
        buffer = self._buffers.get(org_id)
        if buffer is None:
            buffer = self._buffers[org_id] = _Buffer(deque(), self._boot)
        oldest = _now_ms() - int(self.buffer_seconds * 1000)
        while buffer.events and buffer.events[0].id[0] < oldest:
            buffer.floor = buffer.events.popleft().id
        return buffer

    def _sweep(self) -> None:
        """Forget the buffers of organizations quiet for longer than the buffer keeps
        events: any id of theirs is too old to replay anyway (`_too_old`)."""
        if time.monotonic() - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = time.monotonic()
        for org_id in list(self._buffers):
            buffer = self._buffer(org_id)
            if not buffer.events and self._too_old(buffer.floor):
                del self._buffers[org_id]

    async def publish(self, org_id: uuid.UUID, events: Sequence[Outgoing]) -> None:
        self._sweep()
        buffer = self._buffer(org_id)
        made = [Event(self._next_id(), e.name, e.permission, orjson.dumps(e.data)) for e in events]
        for event in made:
            if len(buffer.events) >= self.buffer_size:
                buffer.floor = buffer.events.popleft().id
            buffer.events.append(event)
        self._deliver(org_id, made)

    async def _replay(self, org_id: uuid.UUID, last: EventId) -> list[Event] | None:
        buffer = self._buffer(org_id)
        if last < buffer.floor or last > self._last or self._too_old(last):
            return None
        return [event for event in buffer.events if event.id > last]


class RedisEventBus(EventBus):
    """Across processes: a Redis stream per organization, one reader task per process."""

    def __init__(
        self,
        redis: Redis,
        reader: Redis,
        *,
        key_prefix: str,
        buffer_size: int,
        buffer_seconds: float,
    ) -> None:
        super().__init__(buffer_size=buffer_size, buffer_seconds=buffer_seconds)
        self._redis = redis
        self._reader = reader  # its own connection: XREAD BLOCK holds it
        self._prefix = key_prefix + "events:org:"
        # Writing here wakes the reader when the set of followed streams changes.
        self._wake_key = f"{key_prefix}events:wake:{secrets.token_hex(8)}"
        self._wake_cursor = "0-0"
        self._cursors: dict[uuid.UUID, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _key(self, org_id: uuid.UUID) -> str:
        return f"{self._prefix}{org_id}"

    async def publish(self, org_id: uuid.UUID, events: Sequence[Outgoing]) -> None:
        if not events:
            return
        key = self._key(org_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    fields = {"n": event.name, "p": event.permission, "d": orjson.dumps(event.data)}
                    pipe.xadd(key, fields, maxlen=self.buffer_size, approximate=False)  # type: ignore[arg-type]
                pipe.expire(key, int(self.buffer_seconds) + 60)
                await pipe.execute()
        except (RedisError, OSError):
            # The change is committed; its announcement is lost (clients refetch on reset).
            log.warning("events of organization %s could not be published", org_id)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._read_loop(), name="events-reader")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._wake_key)
        await self._reader.aclose()
        await super().close()

    async def _follow(self, org_id: uuid.UUID) -> None:
        if org_id in self._cursors:
            return
        await self.start()
        try:
            last = await self._last_generated(org_id)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("Events are unavailable; try again shortly") from exc
        if org_id in self._cursors or org_id not in self.subscribers:
            return  # another subscriber was first (its cursor is older), or we left already
        self._cursors[org_id] = last
        with contextlib.suppress(RedisError, OSError):
            await self._redis.xadd(self._wake_key, {"w": "1"}, maxlen=1, approximate=False)

    def _unfollow(self, org_id: uuid.UUID) -> None:
        self._cursors.pop(org_id, None)

    async def _last_generated(self, org_id: uuid.UUID) -> str:
        try:
            info = await self._redis.xinfo_stream(self._key(org_id))
        except ResponseError:  # no such stream yet: everything it will hold is new
            return "0-0"
        return _text(info["last-generated-id"])

    async def _replay(self, org_id: uuid.UUID, last: EventId) -> list[Event] | None:
        if self._too_old(last):
            return None
        key = self._key(org_id)
        try:
            # One MULTI: the oldest and newest kept ids and what follows `last`, at one moment.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xrange(key, min="-", max="+", count=1)
                pipe.xrevrange(key, max="+", min="-", count=1)
                pipe.xrange(key, min=f"({format_event_id(last)}", max="+")
                first, newest, entries = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("Events are unavailable; try again shortly") from exc
        if not first or not newest:
            return None  # nothing kept: whatever `last` was, what followed it is unknown
        first_id = parse_event_id(_text(first[0][0])) or ZERO_ID
        newest_id = parse_event_id(_text(newest[0][0])) or ZERO_ID
        if last < first_id or last > newest_id:
            # Older than the oldest kept event (what came between may be trimmed), or an
            # id this stream never gave out.
            return None
        return [_decode(entry_id, entry) for entry_id, entry in entries]

    async def _read_loop(self) -> None:
        while not self._closing:
            streams: dict[Any, Any] = {self._wake_key: self._wake_cursor}
            keys: dict[str, uuid.UUID] = {}
            for org_id, cursor in self._cursors.items():
                keys[self._key(org_id)] = org_id
                streams[self._key(org_id)] = cursor
            try:
                reply: Any = await self._reader.xread(
                    streams, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis gone (or a reply we did not expect): keep reading
                log.warning("events reader failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for raw_key, entries in reply or ():
                key = _text(raw_key)
                if not entries:
                    continue
                if key == self._wake_key:
                    self._wake_cursor = _text(entries[-1][0])
                    continue
                followed = keys.get(key)
                if followed is None or followed not in self._cursors:
                    continue
                self._cursors[followed] = _text(entries[-1][0])
                try:
                    decoded = [_decode(entry_id, entry) for entry_id, entry in entries]
                except (KeyError, ValueError):
                    log.warning("events of organization %s: unreadable entries", followed)
                    continue
                self._deliver(followed, decoded)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(entry_id: Any, fields: dict[Any, Any]) -> Event:
    parsed = parse_event_id(_text(entry_id)) or ZERO_ID
    return Event(parsed, _text(fields[b"n"]), _text(fields[b"p"]), bytes(fields[b"d"]))


def create_event_bus(settings: Settings, redis: Redis | None) -> EventBus:
    if redis is None or settings.redis_url is None:
        return LocalEventBus(
            buffer_size=settings.events_buffer_size, buffer_seconds=settings.events_buffer_seconds
        )
    reader = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=READ_BLOCK_MS / 1000 + 10,
        health_check_interval=30,
    )
    return RedisEventBus(
        redis,
        reader,
        key_prefix=settings.redis_key_prefix,
        buffer_size=settings.events_buffer_size,
        buffer_seconds=settings.events_buffer_seconds,
    )


class PublishOnlyBus:
    """`tenantry worker`: publishes job events to the organizations' Redis streams."""

    def __init__(self, bus: RedisEventBus, redis: Redis) -> None:
        self._bus = bus
        self._redis = redis

    async def publish(self, org_id: uuid.UUID, events: Sequence[Outgoing]) -> None:
        await self._bus.publish(org_id, events)

    async def close(self) -> None:
        await self._bus.close()
        await self._redis.aclose()
