"""Members (API.md, Organizations): list, change role, remove or leave, transfer ownership."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from starlette.responses import Response

from tenantry.core.authz import TenantContextDep, require
from tenantry.core.openapi import errors
from tenantry.core.responses import Envelope, Page, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.orgs import members
from tenantry.modules.orgs.deps import CacheDep
from tenantry.modules.orgs.models import Membership
from tenantry.modules.orgs.schemas import ChangeRole, MemberListQuery, MemberOut, TransferOwnership
from tenantry.modules.users.models import User

router = APIRouter(prefix="/orgs/{orgId}", tags=["members"], route_class=UnitOfWorkRoute)
NO_CONTENT = status.HTTP_204_NO_CONTENT
UserId = Annotated[uuid.UUID, Path(alias="userId")]


def _member_out(membership: Membership, user: User) -> MemberOut:
    return MemberOut(
        user_id=user.id,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        role=membership.role,
        joined_at=membership.created_at,
    )


@router.get("/members")
async def list_members(
    ctx: Annotated[TenantContext, Depends(require("members:read"))],
    session: SessionDep,
    query: Annotated[MemberListQuery, Query()],
) -> Page[MemberOut]:
    """The organization's members with their roles (search; sort; pages)."""
    rows, total = await members.list_members(session, ctx, query)
    return page(
        [_member_out(m, u) for m, u in rows], total=total, page=query.page, limit=query.limit
    )


@router.patch("/members/{userId}")
async def change_role(
    body: ChangeRole,
    user_id: UserId,
    ctx: Annotated[TenantContext, Depends(require("members:manage"))],
    session: SessionDep,
    cache: CacheDep,
) -> Envelope[MemberOut]:
    """Give a member another role (only roles the caller may grant; never zero owners)."""
    membership = await members.change_role(session, cache, ctx, user_id, body.role)
    return ok(_member_out(membership, await members.user_of(session, membership)))


@router.delete(
    "/members/{userId}",
    status_code=NO_CONTENT,
    response_class=Response,
    responses=errors({403: ["forbidden"]}),  # checked in the service: leaving needs none
)
async def remove_member(
    user_id: UserId, ctx: TenantContextDep, session: SessionDep, cache: CacheDep
) -> None:
    """Remove a member (`members:manage`), or leave when `userId` is the caller."""
    await members.remove_member(session, cache, ctx, user_id)


@router.post(
    "/transfer-ownership",
    status_code=NO_CONTENT,
    response_class=Response,
    responses=errors({403: ["forbidden"]}),  # owners only
)
async def transfer_ownership(
    body: TransferOwnership, ctx: TenantContextDep, session: SessionDep, cache: CacheDep
) -> None:
    """The calling owner makes another member owner and becomes admin."""
    await members.transfer_ownership(session, cache, ctx, body.user_id)
