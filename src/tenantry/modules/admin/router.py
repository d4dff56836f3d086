"""Platform administration (`ADMIN`/`SUPER_ADMIN`): `/admin/orgs`, subscriptions, stats."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from tenantry.core.responses import Envelope, Page, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.modules.admin import service
from tenantry.modules.admin.schemas import AdminOrgOut, AdminOrgQuery, StatsOut, StatsQuery
from tenantry.modules.audit.deps import AuditRequest
from tenantry.modules.auth.deps import PlatformAdmin
from tenantry.modules.orgs.deps import CacheDep
from tenantry.modules.orgs.models import Organization
from tenantry.modules.plans.enforce import now
from tenantry.modules.plans.schemas import SetSubscription
from tenantry.modules.tenants.deps import TenantReadsDep

router = APIRouter(prefix="/admin", tags=["platform administration"], route_class=UnitOfWorkRoute)
# Not `{orgId}`: these are platform routes, not tenant routes (no tenant context).
OrgId = Annotated[uuid.UUID, Path(alias="organizationId")]


def _out(org: Organization, members: int = 0, storage_bytes: int = 0) -> AdminOrgOut:
    return AdminOrgOut(
        id=org.id,
        name=org.name,
        slug=org.slug,
        plan=org.plan,
        status=org.subscription_status,
        trial_ends_at=org.trial_ends_at,
        suspended_at=org.suspended_at,
        converted_at=org.converted_at,
        expired_at=org.expired_at,
        overrides=org.plan_overrides,
        members=members,
        storage_bytes=storage_bytes,
        created_at=org.created_at,
    )


@router.get("/orgs")
async def list_organizations(
    _admin: PlatformAdmin,
    session: SessionDep,
    tenants: TenantReadsDep,
    query: Annotated[AdminOrgQuery, Query()],
) -> Page[AdminOrgOut]:
    """Every organization: plan, status, trial end, members, storage (filters, pages)."""
    rows, total = await service.list_organizations(session, query, tenants)
    items = [_out(org, members, storage) for org, members, storage in rows]
    return page(items, total=total, page=query.page, limit=query.limit)


@router.put("/orgs/{organizationId}/subscription", dependencies=[AuditRequest])
async def set_subscription(
    request: Request,
    org_id: OrgId,
    body: SetSubscription,
    admin: PlatformAdmin,
    session: SessionDep,
    cache: CacheDep,
) -> Envelope[AdminOrgOut]:
    """Set plan, status (and optionally trial end, overrides): a payment provider's hook."""
    org = await service.set_subscription(session, cache, admin.id, org_id, body, now(request))
    return ok(_out(org))


@router.post("/orgs/{organizationId}/suspend", dependencies=[AuditRequest])
async def suspend(
    request: Request, org_id: OrgId, admin: PlatformAdmin, session: SessionDep, cache: CacheDep
) -> Envelope[AdminOrgOut]:
    """Suspend: its members get 403 everywhere under it; nothing is deleted."""
    org = await service.set_suspended(session, cache, admin.id, org_id, True, now(request))
    return ok(_out(org))


@router.post("/orgs/{organizationId}/unsuspend", dependencies=[AuditRequest])
async def unsuspend(
    request: Request, org_id: OrgId, admin: PlatformAdmin, session: SessionDep, cache: CacheDep
) -> Envelope[AdminOrgOut]:
    org = await service.set_suspended(session, cache, admin.id, org_id, False, now(request))
    return ok(_out(org))


@router.get("/stats")
async def stats(
    request: Request,
    _admin: PlatformAdmin,
    session: SessionDep,
    query: Annotated[StatsQuery, Query()],
) -> Envelope[StatsOut]:
    """Trial → paid conversion over a period (default: the last 30 days)."""
    return ok(StatsOut.model_validate(await service.stats(session, query, now(request))))
