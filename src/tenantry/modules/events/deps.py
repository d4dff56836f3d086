"""Who opens an event stream: the tenant gate on the request's credentials, or a ticket."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Query, Request

from tenantry.core.openapi import TENANT_SECURITY, declare
from tenantry.core.routing import SessionDep
from tenantry.core.tenancy import TenantContext, TenantScopeError, bind_tenant
from tenantry.modules.events.service import StreamAccess, redeem_ticket
from tenantry.services import services_of


async def get_stream_access(
    request: Request,
    session: SessionDep,
    org_id: Annotated[uuid.UUID, Path(alias="orgId", description="The organization's id")],
    ticket: Annotated[
        str | None,
        Query(description="A ticket from POST /events/tickets (for EventSource, no headers)"),
    ] = None,
) -> StreamAccess:
    """The subscriber's context in `orgId`, through the tenant gate like any tenant route.

    With `ticket`, the principal that asked for the ticket is confirmed again by the gate
    (session not revoked, still a member, key still valid); otherwise the request's own
    credentials pass the gate (`Authorization` or `X-API-Key`).
    """
    services = services_of(request)
    gate = services.gate
    bind_tenant(session, TenantContext(organization_id=org_id))
    if ticket is not None:
        principal = await redeem_ticket(services.cache, org_id, ticket)
        context = await gate.confirm(session, org_id, principal)
    else:
        context = await gate(request, session, org_id)
        principal = gate.principal_of(request, context)
    if context.organization_id != org_id:
        raise TenantScopeError("the gate returned another organization's context")
    bind_tenant(session, context)
    return StreamAccess(context=context, principal=principal)


declare(
    get_stream_access,
    security=TENANT_SECURITY,  # like every tenant route (or a ticket, in the query)
    errors={
        401: ["unauthorized", "token_expired", "invalid_ticket"],
        403: ["organization_suspended"],
        404: ["not_found"],  # not a member: the organization is not revealed
        429: ["rate_limited"],  # the plan's API rate, or too many open streams
    },
)

StreamAccessDep = Annotated[StreamAccess, Depends(get_stream_access)]
