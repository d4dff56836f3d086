"""Real-time events (API.md, "Real-time events"): the SSE stream and its browser tickets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from starlette.responses import Response

from tenantry.core.authz import require
from tenantry.core.openapi import errors
from tenantry.core.responses import Envelope, Schema, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.events import service
from tenantry.modules.events.deps import StreamAccessDep

router = APIRouter(prefix="/orgs/{orgId}/events", tags=["events"], route_class=UnitOfWorkRoute)
# Any member may stream (each event is filtered by its own read permission); a ticket is
# asked for by a principal that can read the organization at all.
Member = Annotated[TenantContext, Depends(require("org:read"))]

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "`text/event-stream`: `id:`, `event: <entityType>.<action>` or `job.<state>`, "
            "`data:` JSON; `event: reset` when the last event id is older than the buffer; "
            "`: ping` every 15 s"
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}


class TicketOut(Schema):
    ticket: str
    expires_in: int


@router.get(
    "",
    operation_id="events_stream",
    summary="Stream the organization's events (Server-Sent Events)",
    response_class=Response,
    responses=_STREAM_RESPONSES,
)
async def stream_events(
    request: Request,
    access: StreamAccessDep,
    session: SessionDep,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id")
    ] = None,
    last_event_id_query: Annotated[
        str | None, Query(alias="lastEventId", description="Same as the Last-Event-ID header")
    ] = None,
) -> Response:
    """Stream the organization's events (Server-Sent Events)."""
    return await service.open_stream(request, session, access, last_event_id or last_event_id_query)


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    operation_id="events_create_ticket",
    summary="Create a single-use ticket to open the stream from a browser",
    responses=errors({429: ["rate_limited"]}),
)
async def create_ticket(request: Request, ctx: Member) -> Envelope[TicketOut]:
    """Create a single-use ticket (60 s) to open the stream with `?ticket=` (EventSource)."""
    ticket = await service.create_ticket(request, ctx)
    return ok(TicketOut(ticket=ticket, expires_in=service.TICKET_TTL_SECONDS))
