"""`GET /orgs/{orgId}/subscription` and `GET /orgs/{orgId}/usage` (`billing:read`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from tenantry.core.authz import require
from tenantry.core.responses import Envelope, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.plans import counting, usage
from tenantry.modules.plans.enforce import describe, now, subscription_of
from tenantry.modules.plans.schemas import SubscriptionOut, UsageDayOut, UsageQuery

router = APIRouter(prefix="/orgs/{orgId}", tags=["plans"], route_class=UnitOfWorkRoute)
BillingReader = Annotated[TenantContext, Depends(require("billing:read"))]


@router.get("/subscription")
async def get_subscription(
    request: Request, ctx: BillingReader, session: SessionDep
) -> Envelope[SubscriptionOut]:
    """Plan, status, trial end, features, limits and what the organization uses now."""
    org_id = ctx.organization_id
    used = {
        "members": await counting.members_used(session, org_id),
        "projects": await counting.projects_used(session, org_id),
        "storageBytes": await counting.storage_bytes(session, org_id),
    }
    body = describe(subscription_of(ctx), now(request))
    return ok(SubscriptionOut.model_validate({**body, "usage": used}))


@router.get("/usage")
async def get_usage(
    request: Request,
    ctx: BillingReader,
    session: SessionDep,
    query: Annotated[UsageQuery, Query()],
) -> Envelope[list[UsageDayOut]]:
    """Daily counters (requests, active users, records created, storage bytes), oldest first."""
    rows = await usage.daily(session, ctx.organization_id, *query.period)
    return ok([UsageDayOut.model_validate(r) for r in rows])
