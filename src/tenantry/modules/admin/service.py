"""Platform administration over every organization.

Organizations and memberships are platform tables (no tenant scoping); the storage
counters are tenant rows, read here with `all_tenants=True` — allowed in this package only
(tests/test_architecture.py) — in the shared mode, and from each organization's database
with `TenantReads` in database mode (`_storage_used`). Changes to one organization are
audit-logged in that organization, with the platform admin as the actor.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache
from tenantry.core.errors import NotFound
from tenantry.core.listing import search_condition
from tenantry.core.tenancy import ALL_TENANTS, TenantContext, bind_tenant
from tenantry.core.tenantdb import TenantReads
from tenantry.modules.admin.schemas import AdminOrgQuery, StatsQuery
from tenantry.modules.audit.service import diff, record, snapshot
from tenantry.modules.files.models import StorageUsage
from tenantry.modules.orgs.access import forget_organization
from tenantry.modules.orgs.models import Membership, Organization
from tenantry.modules.plans.schemas import SetSubscription
from tenantry.modules.plans.state import ACTIVE, EXPIRED, TRIALING

PAID_PLANS = frozenset({"pro", "enterprise"})
SUBSCRIPTION_FIELDS = (
    "plan",
    "subscription_status",
    "trial_ends_at",
    "plan_overrides",
    "converted_at",
    "expired_at",
    "suspended_at",
)
SORT = {
    "createdAt": Organization.created_at,
    "name": Organization.name,
    "trialEndsAt": Organization.trial_ends_at,
}
DEFAULT_PERIOD_DAYS = 30


async def _organization(session: AsyncSession, org_id: uuid.UUID) -> Organization:
    org = await session.scalar(
        select(Organization).where(Organization.id == org_id, Organization.deleted_at.is_(None))
    )
    if org is None:
        raise NotFound("Organization not found")
    return org


async def _audited_change(
    session: AsyncSession,
    cache: Cache,
    org: Organization,
    admin_id: uuid.UUID,
    action: str,
    change: Any,
) -> Organization:
    before = snapshot(org, SUBSCRIPTION_FIELDS)
    change(org)
    await session.flush()
    changes = diff(before, snapshot(org, SUBSCRIPTION_FIELDS))
    bind_tenant(session, TenantContext(organization_id=org.id, user_id=admin_id))
    await record(session, action, "organization", org.id, changes)
    await forget_organization(cache, session, org.id)  # the plan comes with cached access
    return org


async def set_subscription(
    session: AsyncSession,
    cache: Cache,
    admin_id: uuid.UUID,
    org_id: uuid.UUID,
    body: SetSubscription,
    now: dt.datetime,
) -> Organization:
    org = await _organization(session, org_id)
    fields = body.model_fields_set

    def change(o: Organization) -> None:
        was_paid = o.plan in PAID_PLANS and o.subscription_status == ACTIVE
        o.plan, o.subscription_status = body.plan, body.status
        if "trial_ends_at" in fields:
            o.trial_ends_at = body.trial_ends_at
        if "overrides" in fields:
            o.plan_overrides = body.overrides
        paid_now = body.plan in PAID_PLANS and body.status == ACTIVE
        if paid_now and not was_paid and o.converted_at is None:
            o.converted_at = now
        if body.status == EXPIRED and o.expired_at is None:
            o.expired_at = now
        if body.status == TRIALING:
            o.expired_at = None

    return await _audited_change(
        session, cache, org, admin_id, "organization.subscription_changed", change
    )


async def set_suspended(
    session: AsyncSession,
    cache: Cache,
    admin_id: uuid.UUID,
    org_id: uuid.UUID,
    suspended: bool,
    now: dt.datetime,
) -> Organization:
    org = await _organization(session, org_id)

    def change(o: Organization) -> None:
        if suspended and o.suspended_at is None:
            o.suspended_at = now
        elif not suspended:
            o.suspended_at = None

    action = "organization.suspended" if suspended else "organization.unsuspended"
    return await _audited_change(session, cache, org, admin_id, action, change)


async def list_organizations(
    session: AsyncSession, query: AdminOrgQuery, tenants: TenantReads | None
) -> tuple[Sequence[tuple[Organization, int, int]], int]:
    """A page of organizations with their member count and bytes stored.

    `tenants`: database mode's reads across tenant databases (None in the shared mode).
    """
    conditions: list[ColumnElement[bool]] = [Organization.deleted_at.is_(None)]
    if query.plan:
        conditions.append(Organization.plan == query.plan)
    if query.status:
        conditions.append(Organization.subscription_status == query.status)
    if query.suspended is not None:
        conditions.append(
            Organization.suspended_at.is_not(None)
            if query.suspended
            else Organization.suspended_at.is_(None)
        )
    conditions.extend(search_condition(query.search, Organization.name, Organization.slug))
    total = await session.scalar(select(func.count()).select_from(Organization).where(*conditions))
    column = SORT[query.sort_by]
    order = column.asc() if query.sort_order == "asc" else column.desc()
    orgs = (
        await session.scalars(
            select(Organization)
            .where(*conditions)
            .order_by(order, Organization.id)
            .offset(query.offset)
            .limit(query.limit)
        )
    ).all()
    ids = [o.id for o in orgs]
    members = dict(
        (
            await session.execute(
                select(Membership.organization_id, func.count())
                .where(Membership.organization_id.in_(ids))
                .group_by(Membership.organization_id)
            )
        ).all()
    )
    storage = await _storage_used(session, ids, tenants)
    rows = [(o, int(members.get(o.id, 0)), int(storage.get(o.id, 0))) for o in orgs]
    return rows, int(total or 0)


async def _storage_used(
    session: AsyncSession, ids: Sequence[uuid.UUID], tenants: TenantReads | None
) -> dict[uuid.UUID, int]:
    """Bytes stored by each of `ids` (the page's organizations; missing: none stored)."""
    if tenants is None:  # shared mode: one query over the organizations' rows
        found = await session.execute(
            select(StorageUsage.organization_id, StorageUsage.bytes_used)
            .where(StorageUsage.organization_id.in_(ids))
            .execution_options(**{ALL_TENANTS: True})
        )
        return {org_id: int(used) for org_id, used in found.all()}

    # Database per tenant: each organization's counter is in its own database; one
    # primary-key read per organization of the page whose database serves (one being
    # provisioned, or failed, has stored nothing reachable: 0).
    async def used(tenant: AsyncSession) -> int:
        return int(await tenant.scalar(select(StorageUsage.bytes_used)) or 0)

    return await tenants.read_each(await tenants.serving_organizations(ids), used)


def _period(query: StatsQuery, now: dt.datetime) -> tuple[dt.date, dt.date]:
    end = query.to or now.date()
    start = query.from_ or end - dt.timedelta(days=DEFAULT_PERIOD_DAYS)
    return start, end


async def _count(session: AsyncSession, *conditions: ColumnElement[bool]) -> int:
    query = select(func.count()).select_from(Organization)
    return int(await session.scalar(query.where(*conditions)) or 0)


async def stats(session: AsyncSession, query: StatsQuery, now: dt.datetime) -> dict[str, Any]:
    """Trials started, converted and expired in [from, to]; active trials and paying now.

    The conversion rate is converted / (converted + lapsed), lapsed = expired in the period
    and not converted (since): of the trials that ended, the share that became paid.
    """
    start, end = _period(query, now)
    low = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    high = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)

    def within(column: Any) -> ColumnElement[bool]:
        result: ColumnElement[bool] = (column >= low) & (column < high)
        return result

    started = await _count(session, within(Organization.created_at))
    converted = await _count(session, within(Organization.converted_at))
    expired = await _count(session, within(Organization.expired_at))
    lapsed = await _count(
        session, within(Organization.expired_at), Organization.converted_at.is_(None)
    )
    live = Organization.deleted_at.is_(None)
    active = await _count(
        session,
        live,
        Organization.subscription_status == TRIALING,
        Organization.trial_ends_at > now,
    )
    paying = await _count(
        session,
        live,
        Organization.subscription_status == ACTIVE,
        Organization.plan.in_(PAID_PLANS),
    )
    suspended = await _count(session, live, Organization.suspended_at.is_not(None))
    ended = converted + lapsed
    return {
        "from_": start,
        "to": end,
        "trials_started": started,
        "trials_active": active,
        "converted": converted,
        "expired": expired,
        "conversion_rate": round(converted / ended, 4) if ended else None,
        "paying": paying,
        "suspended": suspended,
    }
