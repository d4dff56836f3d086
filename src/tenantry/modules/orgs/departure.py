"""Leaving every organization at once: what erasing an account does to its memberships.

Two steps, so that a refusal changes nothing: `plan_departure` reads (and locks, for the
owner count) every membership of the user and raises 409 when the user is the last owner
of an organization that has other members; `depart` then, organization by organization
(the session bound to each in turn, so audit entries and key revocations land in that
tenant, under row-level security too), removes the membership, revokes the API keys the
user created there, and deletes an organization the user was the only member of.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache
from tenantry.core.errors import Conflict
from tenantry.core.permissions import Role
from tenantry.core.tenancy import TenantContext, bind_tenant, unbind_tenant
from tenantry.modules.api_keys.service import revoke_keys_created_by
from tenantry.modules.audit.service import record
from tenantry.modules.orgs.access import forget_member
from tenantry.modules.orgs.members import lock_owners
from tenantry.modules.orgs.models import Membership, Organization
from tenantry.modules.orgs.service import soft_delete_organization


@dataclass(frozen=True, slots=True)
class Departure:
    membership: Membership
    organization: Organization
    sole_member: bool


async def plan_departure(session: AsyncSession, user_id: uuid.UUID) -> list[Departure]:
    """Every membership of `user_id`, checked; 409 (nothing changed) for a last owner."""
    rows = (
        await session.execute(
            select(Membership, Organization)
            .join(Organization, Organization.id == Membership.organization_id)
            .where(Membership.user_id == user_id)
            .order_by(Membership.created_at, Membership.id)
        )
    ).all()
    plan = []
    for membership, organization in rows:
        owner = membership.role == Role.OWNER.value and organization.deleted_at is None
        # An owner locks the organization before counting, so two owners erasing at once
        # run one after the other: the second sees the first gone (and is then alone).
        owners = await lock_owners(session, organization.id) if owner else 0
        others = await _other_members(session, organization.id, user_id)
        if owner and others and owners <= 1:
            raise Conflict(
                f"You are the last owner of {organization.name!r}: transfer ownership "
                "or remove the other members first",
                details=[{"field": "organizationId", "message": str(organization.id)}],
            )
        plan.append(Departure(membership, organization, sole_member=others == 0))
    return plan


async def _other_members(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> int:
    count: int = (
        await session.execute(
            select(func.count())
            .select_from(Membership)
            .where(Membership.organization_id == org_id, Membership.user_id != user_id)
        )
    ).scalar_one()
    return count


async def depart(
    session: AsyncSession, cache: Cache, user_id: uuid.UUID, plan: list[Departure]
) -> None:
    """Carry out `plan_departure`'s plan in the caller's transaction."""
    for departure in plan:
        org = departure.organization
        bind_tenant(session, TenantContext.system(org.id, acting_user_id=user_id))
        try:
            await revoke_keys_created_by(session, user_id, reason="creator_erased")
            await session.delete(departure.membership)
            await session.flush()
            await record(
                session,
                "member.left",
                "membership",
                departure.membership.id,
                {"user_id": (user_id, None), "role": (departure.membership.role, None)},
            )
            await forget_member(cache, session, org.id, user_id)
            if departure.sole_member and org.deleted_at is None:
                await soft_delete_organization(session, cache, org, reason="sole_member_erased")
            await session.flush()  # every row of this tenant written while still bound to it
        finally:
            unbind_tenant(session)


async def revoke_keys_everywhere(
    session: AsyncSession, user_id: uuid.UUID, *, actor_id: uuid.UUID, reason: str
) -> None:
    """Revoke the keys `user_id` created in each organization they belong to (a platform
    admin deactivated or deleted the account). Keys of organizations they left were
    revoked when they left (members.remove_member)."""
    org_ids = await session.scalars(
        select(Membership.organization_id).where(Membership.user_id == user_id)
    )
    for org_id in list(org_ids):
        bind_tenant(session, TenantContext.system(org_id, acting_user_id=actor_id))
        try:
            await revoke_keys_created_by(session, user_id, reason=reason)
            await session.flush()
        finally:
            unbind_tenant(session)
