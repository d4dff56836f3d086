"""Users endpoints (API.md, section Users): self-service and platform administration."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from starlette.responses import Response

from tenantry.core.db import utcnow
from tenantry.core.errors import ValidationFailed
from tenantry.core.openapi import errors
from tenantry.core.responses import CursorPage, Envelope, Page, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.modules.admin.subject_access import subject_rows
from tenantry.modules.auth.deps import (
    AccessClaimsDep,
    CurrentUser,
    PlatformAdmin,
    RevocationsDep,
    SecurityDep,
)
from tenantry.modules.auth.mfa import remaining_recovery_codes
from tenantry.modules.auth.sessions import all_sessions
from tenantry.modules.orgs.deps import CacheDep
from tenantry.modules.tenants.deps import TenantReadsDep
from tenantry.modules.users import service
from tenantry.modules.users.models import User
from tenantry.modules.users.schemas import (
    AdminCreateUser,
    AdminUpdateUser,
    AdminUserOut,
    ApiKeyExport,
    AuditEntryExport,
    DeleteMe,
    FileExport,
    InvitationExport,
    MembershipExport,
    SessionExport,
    UpdateMe,
    UserExport,
    UserListQuery,
    UserOut,
)

router = APIRouter(prefix="/users", tags=["users"], route_class=UnitOfWorkRoute)
NO_CONTENT = status.HTTP_204_NO_CONTENT


@router.get("/me")
async def get_me(user: CurrentUser) -> Envelope[UserOut]:
    """The caller's account."""
    return ok(UserOut.model_validate(user))


@router.patch("/me")
async def update_me(body: UpdateMe, user: CurrentUser, session: SessionDep) -> Envelope[UserOut]:
    """Change the caller's name."""
    return ok(UserOut.model_validate(await service.update_profile(session, user, body)))


@router.delete(
    "/me",
    status_code=NO_CONTENT,
    response_class=Response,
    responses=errors({401: ["invalid_credentials"], 409: ["conflict"]}),
)
async def delete_me(
    body: DeleteMe,
    user: CurrentUser,
    claims: AccessClaimsDep,
    session: SessionDep,
    security: SecurityDep,
    revocations: RevocationsDep,
    cache: CacheDep,
) -> None:
    """Erase the caller's account (password required): memberships, keys, sessions, data."""
    by_provider = claims.session_id is None  # an external provider's token
    await service.confirm_erasure(security, user, password=body.password, by_provider=by_provider)
    await service.erase_account(session, cache, revocations, user)


@router.get("/me/export")
async def export_me(
    user: CurrentUser, session: SessionDep, tenants: TenantReadsDep
) -> Envelope[UserExport]:
    """Everything stored about the caller (GDPR)."""
    sessions = await all_sessions(session, user.id)
    rows = await subject_rows(session, user.id, user.email, tenants)
    return ok(
        UserExport(
            user=AdminUserOut.model_validate(user),
            sessions=[SessionExport.model_validate(s) for s in sessions],
            mfa_recovery_codes_remaining=await remaining_recovery_codes(session, user),
            memberships=[
                MembershipExport(
                    organization_id=org.id,
                    organization_name=org.name,
                    role=membership.role,
                    joined_at=membership.created_at,
                )
                for membership, org in rows.memberships
            ],
            invitations_sent=[InvitationExport.model_validate(i) for i in rows.invitations_sent],
            invitations_received=[
                InvitationExport.model_validate(i) for i in rows.invitations_received
            ],
            api_keys=[ApiKeyExport.model_validate(k) for k in rows.api_keys],
            files=[FileExport.model_validate(f) for f in rows.files],
            audit_entries=[AuditEntryExport.model_validate(a) for a in rows.audit_entries],
            exported_at=utcnow(),
        )
    )


@router.get("")
async def list_users(
    _admin: PlatformAdmin, query: Annotated[UserListQuery, Query()], session: SessionDep
) -> Page[AdminUserOut] | CursorPage[AdminUserOut]:
    """Platform admins: all users (search, role, isActive filters; deleted=only; cursor)."""
    filters = service.user_filters(
        search=query.search,
        role=query.role,
        is_active=query.is_active,
        deleted_only=query.deleted == "only",
    )
    if query.cursor is not None and query.sort_by != "createdAt":
        raise ValidationFailed(
            details=[{"field": "cursor", "message": "cursor pagination sorts by createdAt"}]
        )
    listing = await service.list_users(session, filters, query)
    return listing.as_page(AdminUserOut)


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors({409: ["conflict"]}))
async def create_user(
    body: AdminCreateUser, admin: PlatformAdmin, session: SessionDep, security: SecurityDep
) -> Envelope[AdminUserOut]:
    """Platform admins: create a user (only a super admin grants admin roles)."""
    user = await service.admin_create_user(session, security, admin, body)
    return ok(AdminUserOut.model_validate(user))


async def _target(user_id: uuid.UUID, session: SessionDep) -> User:
    return await service.get_user(session, user_id)


async def _deleted_target(user_id: uuid.UUID, session: SessionDep) -> User:
    return await service.get_user(session, user_id, deleted=True)


TargetUser = Annotated[User, Depends(_target)]


@router.get("/{user_id}")
async def get_user(_admin: PlatformAdmin, target: TargetUser) -> Envelope[AdminUserOut]:
    """Platform admins: one user."""
    return ok(AdminUserOut.model_validate(target))


@router.patch("/{user_id}", responses=errors({409: ["conflict"]}))
async def update_user(
    admin: PlatformAdmin,
    body: AdminUpdateUser,
    target: TargetUser,
    session: SessionDep,
    revocations: RevocationsDep,
) -> Envelope[AdminUserOut]:
    """Platform admins: change name, role or isActive (deactivation ends every session)."""
    user = await service.admin_update_user(session, revocations, admin, target, body)
    return ok(AdminUserOut.model_validate(user))


@router.delete("/{user_id}", status_code=NO_CONTENT, response_class=Response)
async def delete_user(
    admin: PlatformAdmin, target: TargetUser, session: SessionDep, revocations: RevocationsDep
) -> None:
    """Platform admins: soft-delete a user (every session ends)."""
    await service.admin_delete_user(session, revocations, admin, target)


@router.post("/{user_id}/restore", responses=errors({409: ["conflict"]}))
async def restore_user(
    admin: PlatformAdmin, target: Annotated[User, Depends(_deleted_target)], session: SessionDep
) -> Envelope[AdminUserOut]:
    """Platform admins: restore a soft-deleted user."""
    user = await service.admin_restore_user(session, admin, target)
    return ok(AdminUserOut.model_validate(user))
