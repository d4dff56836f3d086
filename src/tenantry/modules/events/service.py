"""The event stream of one subscriber, and the tickets browsers open it with.

A stream (`EventStream`) is an ASGI response of its own: it holds no database session
(the request's unit of work has ended before its first byte), only a subscription to the
organization's events (core/events.py), a slot on the stream limits (slots.py) and the
subscriber's principal. Its loop:

- first `event: reset` when the `Last-Event-ID` is older than the buffer (or unknown),
  else the replay of what came after it; then live events, each sent only when the
  subscriber's *current* permissions include the event's read permission;
- `: ping` every `EVENTS_PING_SECONDS` (15);
- every `EVENTS_RECHECK_SECONDS` (5) the principal is confirmed again through the tenant
  gate (`TenantGate.confirm`: revoked session or logout-all, removed membership, revoked
  key, deleted organization → the stream ends; a changed role changes what is sent). The
  check reads the gate's caches (in process with Redis, core/nearcache.py) and opens a
  short session only when they have no answer; so a revocation ends the stream within
  about `EVENTS_RECHECK_SECONDS` + the near cache's staleness bound, well within 15 s;
- a subscriber too slow to keep up (its queue overflows) is disconnected; it resumes
  from its last id.

Tickets: `EventSource` cannot send headers, so a browser first POSTs for a ticket (any
member of the organization) and opens `?ticket=`; a ticket is 256 random bits, stored
hashed in the cache for 60 s with the principal that asked for it, and works once
(`replace_if`: one redeemer wins, also across processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass

import orjson
from fastapi import Request
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from tenantry.core.authz import Principal
from tenantry.core.cache import Cache
from tenantry.core.errors import AppError, Unauthorized
from tenantry.core.events import Event, Subscription
from tenantry.core.routing import after_rollback
from tenantry.core.security import sha256_hex
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.events.slots import StreamSlot
from tenantry.services import Services, services_of

log = logging.getLogger("tenantry.events")

TICKET_TTL_SECONDS = 60
_USED = b"used"
RETRY_MS = 3000  # what EventSource waits before reconnecting
RESET_FRAME = b'event: reset\ndata: {"reason":"The last event id is older than the buffer"}\n\n'
PING_FRAME = b": ping\n\n"


# --- tickets --------------------------------------------------------------------------------


def _ticket_key(ticket: str) -> str:
    return f"events:ticket:{sha256_hex(ticket)}"


async def issue_ticket(cache: Cache, org_id: uuid.UUID, principal: Principal) -> str:
    """A single-use ticket opening `org_id`'s stream as `principal` within 60 s."""
    ticket = secrets.token_urlsafe(32)
    value = orjson.dumps(
        {
            "org": str(org_id),
            "user": str(principal.user_id) if principal.user_id else None,
            "key": str(principal.api_key_id) if principal.api_key_id else None,
            "sid": str(principal.session_id) if principal.session_id else None,
            "iat": principal.issued_at,
        }
    )
    await cache.set(_ticket_key(ticket), value, ttl=TICKET_TTL_SECONDS)
    return ticket


def _bad_ticket() -> Unauthorized:
    return Unauthorized("The ticket is unknown, expired or already used", code="invalid_ticket")


async def redeem_ticket(cache: Cache, org_id: uuid.UUID, ticket: str) -> Principal:
    """The principal a ticket was issued to, once (401 for unknown, expired, used, other org)."""
    if not 20 <= len(ticket) <= 100:
        raise _bad_ticket()
    key = _ticket_key(ticket)
    raw = await cache.get(key)
    if raw is None or raw == _USED:
        raise _bad_ticket()
    if not await cache.replace_if(key, raw, _USED, ttl=TICKET_TTL_SECONDS):
        raise _bad_ticket()  # another request redeemed it first
    data = orjson.loads(raw)
    if data.get("org") != str(org_id):
        raise _bad_ticket()
    return Principal(
        user_id=uuid.UUID(data["user"]) if data.get("user") else None,
        api_key_id=uuid.UUID(data["key"]) if data.get("key") else None,
        session_id=uuid.UUID(data["sid"]) if data.get("sid") else None,
        issued_at=float(data.get("iat") or 0.0),
    )


# --- the stream -----------------------------------------------------------------------------


@dataclass
class StreamAccess:
    """Who opens a stream: the gate's context now, and the principal to confirm later."""

    context: TenantContext
    principal: Principal


def may_receive(context: TenantContext, event: Event) -> bool:
    """Only events of entities the subscriber could GET (`:own` grants are not enough:
    the stream cannot tell whose row an event is about)."""
    return event.permission in context.permissions


class EventStream(Response):
    """`text/event-stream` for one subscriber; everything it holds is released at its end."""

    media_type = "text/event-stream"

    def __init__(
        self,
        services: Services,
        access: StreamAccess,
        slot: StreamSlot,
        subscription: Subscription,
        held: AsyncExitStack,
    ) -> None:
        super().__init__(
            status_code=200,
            media_type=self.media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        # An endless body: no Content-Length (Response sets one for its empty `body`).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.services = services
        self.access = access
        self.slot = slot
        self.subscription = subscription
        self.held = held  # the slot and the subscription, released when the stream ends
        settings = services.settings
        self.ping_seconds = settings.events_ping_seconds
        self.recheck_seconds = settings.events_recheck_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.held:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            producer = asyncio.ensure_future(self._produce(self.subscription, send))
            watcher = asyncio.ensure_future(_disconnected(receive))
            try:
                await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (producer, watcher):
                    task.cancel()
                outcomes = await asyncio.gather(producer, watcher, return_exceptions=True)
            if isinstance(outcomes[0], Exception) and not isinstance(outcomes[0], OSError):
                log.error("event stream failed", exc_info=outcomes[0])
            if not watcher.done() or watcher.cancelled() or not watcher.result():
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _produce(self, subscription: Subscription, send: Send) -> None:
        async def write(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": True})

        context = self.access.context
        await write(b"retry: %d\n\n" % RETRY_MS)
        if subscription.reset:
            await write(RESET_FRAME)
        for event in subscription.take_replay():
            if may_receive(context, event):
                await write(event.frame)
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_seconds
        next_check = loop.time() + self.recheck_seconds
        while True:
            wait = max(0.0, min(next_ping, next_check) - loop.time())
            live = await subscription.next(wait)
            if subscription.lagged:
                return  # too slow: the client resumes from its last id
            if live is not None and may_receive(context, live):
                await write(live.frame)
            now = loop.time()  # checked between events too: a busy stream is still confirmed
            if now >= next_check:
                confirmed = await self._confirm(context)
                if confirmed is None:
                    return
                context = confirmed
                await self.slot.renew()
                next_check = now + self.recheck_seconds
            if now >= next_ping:
                await write(PING_FRAME)
                next_ping = now + self.ping_seconds

    async def _confirm(self, current: TenantContext) -> TenantContext | None:
        """The subscriber's context now, or None when it may no longer read the stream.

        An outage (the database or Redis unreachable) keeps `current`: only an answer can
        end a stream, and the gate refuses new ones meanwhile (503)."""
        org_id = self.access.context.organization_id
        services = self.services
        started = time.monotonic()
        try:
            async with services.database.session(write=False) as session:
                bind_tenant(session, TenantContext(organization_id=org_id))
                return await services.gate.confirm(session, org_id, self.access.principal)
        except AppError as exc:
            if exc.status_code >= 500:  # Redis or the database is down: keep the stream
                return current
            log.info("event stream ended: %s", exc.message)
            return None
        except (OperationalError, InterfaceError, OSError, TimeoutError):
            log.warning("event stream check: database unreachable; stream kept", exc_info=True)
            return current
        except Exception:  # unknown: end it (fail closed); the client reconnects via the gate
            log.exception("event stream check failed")
            return None
        finally:
            elapsed = time.monotonic() - started
            if elapsed > 1.0:
                log.warning("event stream check took %.1f s", elapsed)


async def _disconnected(receive: Receive) -> bool:
    """Wait until the client goes away (True)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return True


async def create_ticket(request: Request, context: TenantContext) -> str:
    """A ticket for the caller who passed the gate with `context`."""
    services = services_of(request)
    principal = services.gate.principal_of(request, context)
    return await issue_ticket(services.cache, context.organization_id, principal)


async def open_stream(
    request: Request, session: AsyncSession, access: StreamAccess, last_event_id: str | None
) -> EventStream:
    """Take a slot on the stream limits (429 beyond) and hand the stream its subscriber.

    The subscription is live before the response starts (a change committed once the
    client has the headers is delivered). Slot and subscription are given back when the
    stream ends, or — should the request's transaction fail to end after this — by the
    unit of work's after-rollback callback; Redis being down is a 503 envelope here.
    """
    services = services_of(request)
    context = access.context
    holder = context.user_id or context.api_key_id
    if holder is None:
        raise Unauthorized()
    held = AsyncExitStack()
    try:
        slot = await services.event_streams.acquire(holder, context.organization_id)
        held.push_async_callback(slot.release)
        subscription = await held.enter_async_context(
            services.events.subscribe(context.organization_id, last_event_id)
        )
    except BaseException:
        await held.aclose()
        raise
    after_rollback(session, held.aclose)
    return EventStream(services, access, slot, subscription, held)
