"""Invitations (API.md, Organizations): create, list, revoke; accept."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from starlette.responses import Response

from tenantry.core.authz import require
from tenantry.core.openapi import errors
from tenantry.core.responses import Envelope, ListQuery, Page, ok, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.audit.deps import AuditRequest
from tenantry.modules.auth.deps import CurrentUser, SettingsDep
from tenantry.modules.orgs import invitations
from tenantry.modules.orgs.deps import CacheDep
from tenantry.modules.orgs.schemas import (
    AcceptInvitation,
    CreateInvitation,
    InvitationOut,
    MemberOut,
)

router = APIRouter(tags=["invitations"], route_class=UnitOfWorkRoute)
Inviter = Annotated[TenantContext, Depends(require("members:invite"))]
InvitationId = Annotated[uuid.UUID, Path(alias="invitationId")]


@router.post(
    "/orgs/{orgId}/invitations",
    status_code=status.HTTP_201_CREATED,
    responses=errors({429: ["rate_limited"]}),
)
async def create_invitation(
    body: CreateInvitation, ctx: Inviter, session: SessionDep, settings: SettingsDep
) -> Envelope[InvitationOut]:
    """Invite an email address with a role (emailed link, valid 7 days)."""
    invitation = await invitations.create_invitation(session, settings, ctx, body.email, body.role)
    return ok(InvitationOut.model_validate(invitation))


@router.get("/orgs/{orgId}/invitations")
async def list_invitations(
    _ctx: Inviter, session: SessionDep, query: Annotated[ListQuery, Query()]
) -> Page[InvitationOut]:
    """The organization's pending invitations."""
    rows, total = await invitations.list_invitations(
        session, offset=query.offset, limit=query.limit
    )
    items = [InvitationOut.model_validate(row) for row in rows]
    return page(items, total=total, page=query.page, limit=query.limit)


@router.delete(
    "/orgs/{orgId}/invitations/{invitationId}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def revoke_invitation(
    invitation_id: InvitationId, _ctx: Inviter, session: SessionDep
) -> None:
    """Revoke a pending invitation: its link stops working."""
    await invitations.revoke_invitation(session, invitation_id)


@router.post(
    "/invitations/accept",
    dependencies=[AuditRequest],
    responses=errors({400: ["invalid_token"], 403: ["forbidden"], 409: ["conflict"]}),
)
async def accept_invitation(
    body: AcceptInvitation, user: CurrentUser, session: SessionDep, cache: CacheDep
) -> Envelope[MemberOut]:
    """Join the organization with the invitation's role (the caller's verified email must match)."""
    membership = await invitations.accept_invitation(session, cache, user, body.token)
    return ok(
        MemberOut(
            user_id=user.id,
            email=user.email,
            first_name=user.first_name,
            last_name=user.last_name,
            role=membership.role,
            joined_at=membership.created_at,
        )
    )
