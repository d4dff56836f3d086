"""A data subject's rows in every organization, for the GDPR export (GET /users/me/export).

What a person left behind spans tenants, including organizations they have since left,
so these reads use `all_tenants=True` (allowed in this package only) and each one is
filtered by the subject: rows they created, sent, received or acted in. Read only.
Secrets never leave: API keys give metadata (prefix, never the hash), files their
metadata (never the storage key), audit entries are already redacted when written.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.tenancy import ALL_TENANTS, INCLUDE_DELETED
from tenantry.modules.api_keys.models import ApiKey
from tenantry.modules.audit.models import AuditLog
from tenantry.modules.files.models import StoredFile
from tenantry.modules.orgs.models import Invitation, Membership, Organization

_EVERYWHERE = {ALL_TENANTS: True, INCLUDE_DELETED: True}


@dataclass(frozen=True, slots=True)
class SubjectRows:
    memberships: list[tuple[Membership, Organization]]
    invitations_sent: list[Invitation]
    invitations_received: list[Invitation]
    api_keys: list[ApiKey]
    files: list[StoredFile]
    audit_entries: list[AuditLog]


async def subject_rows(session: AsyncSession, user_id: uuid.UUID, email: str) -> SubjectRows:
    memberships = (
        await session.execute(
            select(Membership, Organization)
            .join(Organization, Organization.id == Membership.organization_id)
            .where(Membership.user_id == user_id)
            .order_by(Membership.created_at)
        )
    ).all()
    return SubjectRows(
        memberships=list(memberships),
        invitations_sent=await _all(session, Invitation, Invitation.invited_by == user_id),
        invitations_received=await _all(
            session,
            Invitation,
            or_(Invitation.email == email, Invitation.accepted_by == user_id),
        ),
        api_keys=await _all(session, ApiKey, ApiKey.created_by == user_id),
        files=await _all(session, StoredFile, StoredFile.created_by == user_id),
        audit_entries=await _all(session, AuditLog, AuditLog.actor_user_id == user_id),
    )


async def _all(session: AsyncSession, model: Any, condition: Any) -> list[Any]:
    rows = await session.scalars(
        select(model).where(condition).order_by(model.created_at).execution_options(**_EVERYWHERE)
    )
    return list(rows)
