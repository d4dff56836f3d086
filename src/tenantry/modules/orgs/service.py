"""Organizations: create (with the owner membership), list mine, read, update, soft delete."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.cache import Cache
from tenantry.core.db import new_id, utcnow
from tenantry.core.errors import Conflict, NotFound
from tenantry.core.listing import search_condition
from tenantry.core.permissions import Role, role_permissions
from tenantry.core.tenancy import TenantContext, bind_tenant, require_tenant
from tenantry.modules.audit.service import created, diff, record, snapshot
from tenantry.modules.orgs.access import forget_organization
from tenantry.modules.orgs.models import (
    TRIAL_PLAN,
    Membership,
    Organization,
    SubscriptionStatus,
)
from tenantry.modules.orgs.schemas import (
    CreateOrganization,
    OrganizationListQuery,
    UpdateOrganization,
)
from tenantry.modules.orgs.slugs import slugify, with_suffix

AUDITED_FIELDS = ("name", "slug", "plan", "subscription_status", "trial_ends_at")
SORT_COLUMNS = {"createdAt": Organization.created_at, "name": Organization.name}
SLUG_ATTEMPTS = 5


async def _slug_taken(session: AsyncSession, slug: str) -> bool:
    found = await session.scalar(select(Organization.id).where(Organization.slug == slug))
    return found is not None


async def _free_slug(session: AsyncSession, body: CreateOrganization) -> str:
    if body.slug is not None:
        if await _slug_taken(session, body.slug):
            raise Conflict("This slug is already taken")
        return body.slug
    slug = slugify(body.name)
    for _ in range(SLUG_ATTEMPTS):
        if not await _slug_taken(session, slug):
            return slug
        slug = with_suffix(slugify(body.name))
    raise Conflict("Could not derive a free slug; give one explicitly")


async def create_organization(
    session: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    body: CreateOrganization,
    *,
    organization_id: uuid.UUID | None = None,
) -> Organization:
    """The organization and the caller's owner membership, in the caller's transaction
    (with `organization_id`: the id its database was provisioned under)."""
    now = utcnow()
    org = Organization(
        id=organization_id or new_id(),
        name=body.name,
        slug=await _free_slug(session, body),
        plan=TRIAL_PLAN,
        subscription_status=SubscriptionStatus.TRIALING.value,
        trial_ends_at=now + dt.timedelta(days=settings.trial_days),
        created_by=user_id,
    )
    session.add(org)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("This slug is already taken") from None
    session.add(Membership(organization_id=org.id, user_id=user_id, role=Role.OWNER.value))
    await session.flush()
    bind_tenant(
        session,
        TenantContext(
            organization_id=org.id,
            user_id=user_id,
            role=Role.OWNER.value,
            permissions=role_permissions(Role.OWNER),
            plan=org.plan,
        ),
    )
    await record(
        session,
        "organization.created",
        "organization",
        org.id,
        created(snapshot(org, AUDITED_FIELDS)),
    )
    return org


async def list_my_organizations(
    session: AsyncSession, user_id: uuid.UUID, query: OrganizationListQuery
) -> tuple[Sequence[tuple[Organization, str]], int]:
    conditions: list[ColumnElement[bool]] = [
        Membership.user_id == user_id,
        Organization.deleted_at.is_(None),
    ]
    base = select(Organization, Membership.role).join(
        Membership, Membership.organization_id == Organization.id
    )
    conditions.extend(search_condition(query.search, Organization.name))
    total = (
        await session.execute(
            select(func.count())
            .select_from(Organization)
            .join(Membership, Membership.organization_id == Organization.id)
            .where(*conditions)
        )
    ).scalar_one()
    column = SORT_COLUMNS[query.sort_by]
    order = column.asc() if query.sort_order == "asc" else column.desc()
    rows = await session.execute(
        base.where(*conditions)
        .order_by(order, Organization.id)
        .offset(query.offset)
        .limit(query.limit)
    )
    return [(org, role) for org, role in rows.all()], total


async def current_organization(session: AsyncSession) -> Organization:
    """The bound organization (the tenant gate already proved it exists and is live)."""
    context = require_tenant(session)
    org = await session.scalar(
        select(Organization).where(
            Organization.id == context.organization_id, Organization.deleted_at.is_(None)
        )
    )
    if org is None:
        raise NotFound("Organization not found")
    return org


async def update_organization(
    session: AsyncSession, cache: Cache, body: UpdateOrganization
) -> Organization:
    org = await current_organization(session)
    before = snapshot(org, AUDITED_FIELDS)
    fields = body.model_dump(exclude_unset=True)
    if fields.get("name") is None:
        fields.pop("name", None)
    if "slug" in fields:
        slug = fields.pop("slug")
        if slug is not None and slug != org.slug:
            if await _slug_taken(session, slug):
                raise Conflict("This slug is already taken")
            org.slug = slug
    for name, value in fields.items():
        setattr(org, name, value)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("This slug is already taken") from None
    changes = diff(before, snapshot(org, AUDITED_FIELDS))
    if changes:
        await record(session, "organization.updated", "organization", org.id, changes)
        await forget_organization(cache, session, org.id)
    return org


async def delete_organization(session: AsyncSession, cache: Cache) -> None:
    await soft_delete_organization(session, cache, await current_organization(session))


async def soft_delete_organization(
    session: AsyncSession, cache: Cache, org: Organization, *, reason: str | None = None
) -> None:
    """Soft-delete `org` (the session bound to it), audited, its cached access dropped."""
    org.deleted_at = utcnow()
    await session.flush()
    changes: dict[str, tuple[object, object]] = {"deleted_at": (None, org.deleted_at)}
    if reason is not None:
        changes["reason"] = (None, reason)
    await record(session, "organization.deleted", "organization", org.id, changes)
    await forget_organization(cache, session, org.id)


async def existing_organization_ids(
    session: AsyncSession, organization_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of `organization_ids` exist (soft-deleted ones included: their data is kept)."""
    if not organization_ids:
        return set()
    found = await session.scalars(
        select(Organization.id).where(Organization.id.in_(list(organization_ids)))
    )
    return set(found)


async def live_organization_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every organization not deleted."""
    return list(
        await session.scalars(
            select(Organization.id)
            .where(Organization.deleted_at.is_(None))
            .order_by(Organization.id)
        )
    )


async def erase_organization(
    session: AsyncSession, cache: Cache, organization_id: uuid.UUID
) -> bool:
    """The organization's deletion for good (database per tenant: its database is dropped
    by the caller, modules/tenants). The control row stays, soft-deleted, because the
    control audit log that names it is append-only; False if there is no such organization.
    """
    org = await session.get(Organization, organization_id)
    if org is None:
        return False
    bind_tenant(session, TenantContext.system(organization_id))
    if org.deleted_at is None:
        await soft_delete_organization(session, cache, org, reason="erased")
    else:
        await forget_organization(cache, session, organization_id)
    return True
