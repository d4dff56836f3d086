"""A data subject's rows in every organization, for the GDPR export (GET /users/me/export).

What a person left behind spans tenants, including organizations they have since left,
so these reads ignore tenant scoping and each one is filtered by the subject: rows they
created, sent, received or acted in. Read only. Secrets never leave: API keys give
metadata (prefix, never the hash), files their metadata (never the storage key), audit
entries are already redacted when written.

Shared mode: one `all_tenants=True` query per kind (allowed in this package only).
Database per tenant: memberships, invitations, API keys and the membership/organization
audit entries are control rows, read the same way; files and the audit entries of
resources are in the tenant databases, read with `TenantReads` from **every** serving
tenant database. Not only the caller's current organizations: memberships are deleted
when a person leaves, and a database can only hold rows of someone who was once a
member, so no smaller set is known to be complete (docs/decisions.md, "Database per
tenant: reads across tenant databases"). The cost is one read-only session per tenant
database, a few at a time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.tenancy import ALL_TENANTS, INCLUDE_DELETED
from tenantry.core.tenantdb import TenantReads, tenant_bind
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
    audit_entries: list[AuditLog]  # of every database, oldest first


@dataclass(frozen=True, slots=True)
class _TenantPart:
    files: list[StoredFile]
    audit_entries: list[AuditLog]


async def subject_rows(
    session: AsyncSession, user_id: uuid.UUID, email: str, tenants: TenantReads | None
) -> SubjectRows:
    """The subject's rows; `tenants`: database mode's reads across tenant databases (None
    in the shared mode)."""
    memberships = (
        await session.execute(
            select(Membership, Organization)
            .join(Organization, Organization.id == Membership.organization_id)
            .where(Membership.user_id == user_id)
            .order_by(Membership.created_at)
        )
    ).all()
    # Audit entries: every entry in the shared mode; the control database's part (member,
    # invitation, key and organization changes) in database mode.
    audit_entries = await _all(session, AuditLog, AuditLog.actor_user_id == user_id)
    if tenants is None:
        files = await _all(session, StoredFile, StoredFile.created_by == user_id)
    else:
        files = []
        for part in (await _tenant_parts(tenants, user_id)).values():
            files.extend(part.files)
            audit_entries.extend(part.audit_entries)
        files.sort(key=lambda row: (row.created_at, row.id))
        audit_entries.sort(key=lambda row: (row.created_at, row.id))
    return SubjectRows(
        memberships=list(memberships),
        invitations_sent=await _all(session, Invitation, Invitation.invited_by == user_id),
        invitations_received=await _all(
            session,
            Invitation,
            or_(Invitation.email == email, Invitation.accepted_by == user_id),
        ),
        api_keys=await _all(session, ApiKey, ApiKey.created_by == user_id),
        files=files,
        audit_entries=audit_entries,
    )


async def _tenant_parts(tenants: TenantReads, user_id: uuid.UUID) -> dict[uuid.UUID, _TenantPart]:
    async def read(tenant: AsyncSession) -> _TenantPart:
        files = await tenant.scalars(
            select(StoredFile)
            .where(StoredFile.created_by == user_id)
            .order_by(StoredFile.created_at)
            .execution_options(**{INCLUDE_DELETED: True})
        )
        # Audit entries follow their transaction: those of resources are in the tenant
        # database, asked for by its engine (a read alone would go to the control one).
        entries = await tenant.scalars(
            select(AuditLog).where(AuditLog.actor_user_id == user_id).order_by(AuditLog.created_at),
            bind_arguments={"bind": await tenant_bind(tenant)},
        )
        return _TenantPart(list(files), list(entries))

    return await tenants.read_each(await tenants.serving_organizations(), read)


async def _all(session: AsyncSession, model: Any, condition: Any) -> list[Any]:
    rows = await session.scalars(
        select(model).where(condition).order_by(model.created_at).execution_options(**_EVERYWHERE)
    )
    return list(rows)
