"""Members of the bound organization: list, change role, remove, leave, transfer ownership.

An organization never has zero owners: every change that takes the owner role away first
locks the organization's row (`SELECT ... FOR UPDATE`; SQLite serialises writers anyway),
then counts the owners. Two concurrent demotions of the last two owners therefore run one
after the other, and the second sees a single owner left and gets 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.cache import Cache
from tenantry.core.errors import Conflict, Forbidden, NotFound
from tenantry.core.listing import search_condition
from tenantry.core.permissions import Role, can_change_role, can_grant, grants
from tenantry.core.tenancy import TenantContext
from tenantry.modules.api_keys.service import revoke_keys_created_by
from tenantry.modules.audit.service import record
from tenantry.modules.orgs.access import forget_member
from tenantry.modules.orgs.models import Membership, Organization
from tenantry.modules.orgs.schemas import MemberListQuery
from tenantry.modules.users.models import User

SORT_COLUMNS = {
    "createdAt": Membership.created_at,
    "joinedAt": Membership.created_at,
    "email": User.email,
}
LAST_OWNER = "An organization must keep at least one owner"


async def list_members(
    session: AsyncSession, context: TenantContext, query: MemberListQuery
) -> tuple[Sequence[tuple[Membership, User]], int]:
    conditions = [Membership.organization_id == context.organization_id]
    conditions.extend(search_condition(query.search, User.email))
    joined = select(Membership, User).join(User, User.id == Membership.user_id)
    total = (
        await session.execute(
            select(func.count())
            .select_from(Membership)
            .join(User, User.id == Membership.user_id)
            .where(*conditions)
        )
    ).scalar_one()
    column = SORT_COLUMNS[query.sort_by]
    order = column.asc() if query.sort_order == "asc" else column.desc()
    rows = await session.execute(
        joined.where(*conditions)
        .order_by(order, Membership.id)
        .offset(query.offset)
        .limit(query.limit)
    )
    return [(m, u) for m, u in rows.all()], total


async def find_member(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID
) -> Membership | None:
    membership: Membership | None = await session.scalar(
        select(Membership).where(
            Membership.organization_id == organization_id, Membership.user_id == user_id
        )
    )
    return membership


async def user_of(session: AsyncSession, membership: Membership) -> User:
    user: User = await session.get_one(User, membership.user_id)
    return user


async def _member_or_404(
    session: AsyncSession, context: TenantContext, user_id: uuid.UUID
) -> Membership:
    membership = await find_member(session, context.organization_id, user_id)
    if membership is None:
        raise NotFound("Member not found")
    return membership


async def lock_owners(session: AsyncSession, organization_id: uuid.UUID) -> int:
    """Lock the organization's row, then count its owners (see the module docstring)."""
    await session.execute(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )
    count: int = (
        await session.execute(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.organization_id == organization_id,
                Membership.role == Role.OWNER.value,
            )
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return count


async def _keep_an_owner(session: AsyncSession, membership: Membership) -> None:
    if membership.role != Role.OWNER.value:
        return
    owners = await lock_owners(session, membership.organization_id)
    await session.refresh(membership)
    if membership.role == Role.OWNER.value and owners <= 1:
        raise Conflict(LAST_OWNER)


async def change_role(
    session: AsyncSession, cache: Cache, context: TenantContext, user_id: uuid.UUID, role: Role
) -> Membership:
    membership = await _member_or_404(session, context, user_id)
    if context.role is None or not can_change_role(context.role, membership.role, role):
        raise Forbidden("You cannot grant or take away this role")
    if membership.role == role.value:
        return membership
    if role is not Role.OWNER:
        await _keep_an_owner(session, membership)
    old = membership.role
    membership.role = role.value
    await session.flush()
    await record(
        session,
        "member.role_changed",
        "membership",
        membership.id,
        {"user_id": (user_id, user_id), "role": (old, role.value)},
    )
    await forget_member(cache, session, context.organization_id, user_id)
    return membership


async def remove_member(
    session: AsyncSession, cache: Cache, context: TenantContext, user_id: uuid.UUID
) -> None:
    """Remove someone (`members:manage`, and a role one may grant), or leave (oneself)."""
    leaving = context.api_key_id is None and user_id == context.user_id
    if not leaving and not grants(context.permissions, "members:manage"):
        raise Forbidden("This needs the members:manage permission")
    membership = await _member_or_404(session, context, user_id)
    if not leaving and (context.role is None or not can_grant(context.role, membership.role)):
        raise Forbidden("You cannot remove a member with this role")
    await _keep_an_owner(session, membership)
    await session.delete(membership)
    await session.flush()
    # A key acts only while its creator is a member: listed as revoked, never revived by
    # a later invitation of the same person.
    await revoke_keys_created_by(session, user_id)
    action = "member.left" if leaving else "member.removed"
    await record(
        session,
        action,
        "membership",
        membership.id,
        {"user_id": (user_id, None), "role": (membership.role, None)},
    )
    await forget_member(cache, session, context.organization_id, user_id)


async def transfer_ownership(
    session: AsyncSession, cache: Cache, context: TenantContext, user_id: uuid.UUID
) -> None:
    """The caller (an owner, signed in as a user) makes `user_id` owner and becomes admin."""
    if (
        context.api_key_id is not None
        or context.role != Role.OWNER.value
        or context.user_id is None
    ):
        raise Forbidden("Only an owner can transfer ownership")
    if user_id == context.user_id:
        raise Conflict("You already own this organization")
    target = await _member_or_404(session, context, user_id)
    mine = await _member_or_404(session, context, context.user_id)
    await lock_owners(session, context.organization_id)
    await session.refresh(mine)
    if mine.role != Role.OWNER.value:
        raise Forbidden("Only an owner can transfer ownership")
    old_target = target.role
    target.role = Role.OWNER.value
    mine.role = Role.ADMIN.value
    await session.flush()
    await record(
        session,
        "organization.ownership_transferred",
        "organization",
        context.organization_id,
        {
            "owner": (context.user_id, user_id),
            "previous_role_of_new_owner": (old_target, Role.OWNER.value),
        },
    )
    await forget_member(cache, session, context.organization_id, user_id)
    await forget_member(cache, session, context.organization_id, context.user_id)


async def add_member(
    session: AsyncSession, cache: Cache, organization_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> Membership:
    """A new membership (invitation accepted); 409 when already a member."""
    if await find_member(session, organization_id, user_id) is not None:
        raise Conflict("This user is already a member of the organization")
    membership = Membership(organization_id=organization_id, user_id=user_id, role=role)
    session.add(membership)
    await session.flush()
    await forget_member(cache, session, organization_id, user_id)
    return membership
