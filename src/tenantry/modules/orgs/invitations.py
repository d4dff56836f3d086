"""Invitations: create (emailed link), list, revoke, accept.

The token is `<organization id hex>.<256-bit secret>`: the organization part lets
`accept` bind the session to the right tenant before looking the invitation up (the
table is tenant data, under row-level security); only the SHA-256 of the whole token is
stored. A token works once, for 7 days (`INVITATION_TTL_SECONDS`), for the account whose
verified email is the invited one; the role is the invitation's.

An organization sends at most `INVITATIONS_PER_ORG_PER_HOUR` invitations (each one an
email naming the organization) in any rolling hour: counted from this table under the
organization's row lock, so the cap holds across processes and concurrent requests.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.cache import Cache
from tenantry.core.db import utcnow
from tenantry.core.dml import update_returning
from tenantry.core.errors import Conflict, Forbidden, InvalidToken, NotFound, RateLimited
from tenantry.core.listing import created_at_key, offset_page
from tenantry.core.mail import queue_email
from tenantry.core.permissions import Role, can_grant, role_permissions
from tenantry.core.security import new_opaque_token, sha256_hex
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.audit.service import created, record
from tenantry.modules.auth.emails import duration_text, token_link
from tenantry.modules.orgs.members import add_member, find_member
from tenantry.modules.orgs.models import Invitation, Membership, Organization
from tenantry.modules.plans.enforce import check_join, lock_organization
from tenantry.modules.users.models import User

ACCEPT_PATH = "/accept-invitation"
CAP_WINDOW = dt.timedelta(hours=1)


def _token_for(organization_id: uuid.UUID) -> str:
    return f"{organization_id.hex}.{new_opaque_token()}"


def _organization_of(token: str) -> uuid.UUID:
    head, dot, secret = token.partition(".")
    if not dot or not secret:
        raise InvalidToken()
    try:
        return uuid.UUID(hex=head)
    except ValueError:
        raise InvalidToken() from None


async def create_invitation(
    session: AsyncSession, settings: Settings, context: TenantContext, email: str, role: Role
) -> Invitation:
    if context.role is None or not can_grant(context.role, role):
        raise Forbidden("You cannot invite someone with this role")
    email = email.lower()
    existing_user = await session.scalar(select(User.id).where(func.lower(User.email) == email))
    if existing_user is not None and await find_member(
        session, context.organization_id, existing_user
    ):
        raise Conflict("This person is already a member of the organization")
    now = utcnow()
    await _check_hourly_cap(session, context.organization_id, settings, now)
    await session.execute(  # a new invitation replaces a pending one for the same address
        update(Invitation)
        .where(
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    raw = _token_for(context.organization_id)
    invitation = Invitation(
        email=email,
        role=role.value,
        token_hash=sha256_hex(raw),
        expires_at=now + dt.timedelta(seconds=settings.invitation_ttl_seconds),
        invited_by=context.user_id,
    )
    session.add(invitation)
    await session.flush()
    org = await session.get(Organization, context.organization_id)
    inviter = await session.get(User, context.user_id) if context.user_id else None
    await queue_email(
        session,
        to=email,
        template="invitation",
        context={
            "inviter_name": _display_name(inviter),
            "organization_name": org.name if org else "",
            "role": role.value,
            "link": token_link(settings, ACCEPT_PATH, raw),
            "expires_in": duration_text(settings.invitation_ttl_seconds),
        },
        organization_id=context.organization_id,
    )
    await record(
        session,
        "invitation.created",
        "invitation",
        invitation.id,
        created({"email": email, "role": role.value, "expires_at": invitation.expires_at}),
    )
    return invitation


async def _check_hourly_cap(
    session: AsyncSession, organization_id: uuid.UUID, settings: Settings, now: dt.datetime
) -> None:
    """429 `rate_limited` once the organization sent its hourly share of invitations.

    Every invitation created in the last hour counts, revoked or replaced ones too: each
    sent an email. `Retry-After` is when the oldest one that must age out leaves the window.
    """
    cap = settings.invitations_per_org_per_hour
    await lock_organization(session, organization_id)  # concurrent invites queue here
    recent = list(
        (
            await session.scalars(
                select(Invitation.created_at)
                .where(
                    Invitation.organization_id == organization_id,
                    Invitation.created_at > now - CAP_WINDOW,
                )
                .order_by(Invitation.created_at.desc())
                .limit(cap)
            )
        ).all()
    )
    if len(recent) < cap:
        return
    frees_at = recent[-1] + CAP_WINDOW  # the cap-th newest: once it is out, one slot is free
    raise RateLimited(
        retry_after=math.ceil((frees_at - now).total_seconds()),
        message=f"This organization has sent {cap} invitations in the last hour; try later",
    )


def _display_name(user: User | None) -> str:
    if user is None:
        return "A teammate"
    name = " ".join(p for p in (user.first_name, user.last_name) if p)
    return name or user.email


async def list_invitations(
    session: AsyncSession, *, offset: int, limit: int
) -> tuple[list[Invitation], int]:
    return await offset_page(
        session,
        select(Invitation),
        key=created_at_key(Invitation.created_at),
        id_column=Invitation.id,
        descending=True,
        offset=offset,
        limit=limit,
    )


async def revoke_invitation(session: AsyncSession, invitation_id: uuid.UUID) -> None:
    invitation = await session.scalar(select(Invitation).where(Invitation.id == invitation_id))
    if invitation is None:
        raise NotFound("Invitation not found")
    if invitation.accepted_at is not None:
        raise Conflict("The invitation has already been accepted")
    if invitation.revoked_at is not None:
        return
    invitation.revoked_at = utcnow()
    await session.flush()
    await record(
        session,
        "invitation.revoked",
        "invitation",
        invitation.id,
        {"revoked_at": (None, invitation.revoked_at)},
    )


async def accept_invitation(
    session: AsyncSession, cache: Cache, user: User, token: str
) -> Membership:
    organization_id = _organization_of(token)
    org = await session.scalar(
        select(Organization).where(
            Organization.id == organization_id, Organization.deleted_at.is_(None)
        )
    )
    if org is None:
        raise InvalidToken()
    bind_tenant(session, TenantContext(organization_id=organization_id, user_id=user.id))
    now = utcnow()
    digest = sha256_hex(token)
    invitation = await session.scalar(
        select(Invitation).where(
            Invitation.token_hash == digest,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
    )
    if invitation is None:
        raise InvalidToken()
    if user.email_verified_at is None or user.email.lower() != invitation.email:
        raise Forbidden("This invitation is for another email address (verified)")
    if await find_member(session, organization_id, user.id) is not None:
        raise Conflict("You are already a member of this organization")
    await check_join(session, org, now)
    used = await update_returning(  # once, even under two concurrent accepts
        session,
        Invitation,
        [Invitation.id == invitation.id, Invitation.accepted_at.is_(None)],
        {"accepted_at": now, "accepted_by": user.id},
        [Invitation.id],
    )
    if used.scalar_one_or_none() is None:
        raise InvalidToken()
    membership = await add_member(session, cache, organization_id, user.id, invitation.role)
    bind_tenant(
        session,
        TenantContext(
            organization_id=organization_id,
            user_id=user.id,
            role=invitation.role,
            permissions=role_permissions(invitation.role),
            plan=org.plan,
        ),
    )
    await record(
        session,
        "invitation.accepted",
        "invitation",
        invitation.id,
        {"accepted_by": (None, user.id), "role": (None, invitation.role)},
    )
    await record(
        session,
        "member.added",
        "membership",
        membership.id,
        created({"user_id": user.id, "role": invitation.role}),
    )
    return membership
