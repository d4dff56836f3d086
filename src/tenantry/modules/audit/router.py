"""The audit log (API.md, Audit log): read-only, filtered, paginated."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from tenantry.core.authz import require
from tenantry.core.dates import IsoDateTime
from tenantry.core.responses import ListQuery, Page, Schema, page
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import TenantContext
from tenantry.modules.audit.service import AuditFilters, list_entries
from tenantry.modules.plans.enforce import feature

router = APIRouter(
    prefix="/orgs/{orgId}/audit-logs",
    tags=["audit log"],
    route_class=UnitOfWorkRoute,
    dependencies=[Depends(feature("auditLog"))],
)


class AuditQuery(ListQuery):
    action: str | None = Field(default=None, max_length=100)
    entity_type: str | None = Field(default=None, max_length=50)
    entity_id: uuid.UUID | None = None
    actor_user_id: uuid.UUID | None = None
    from_: IsoDateTime | None = Field(default=None, alias="from")
    to: IsoDateTime | None = None


class AuditEntryOut(Schema):
    id: uuid.UUID
    action: str
    entity_type: str
    entity_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    changes: dict[str, Any]
    ip: str | None
    user_agent: str | None
    request_id: str | None
    created_at: dt.datetime


@router.get("")
async def list_audit_logs(
    _ctx: Annotated[TenantContext, Depends(require("audit:read"))],
    session: SessionDep,
    query: Annotated[AuditQuery, Query()],
) -> Page[AuditEntryOut]:
    """The organization's audit entries, newest first by default."""
    filters = AuditFilters(
        action=query.action,
        entity_type=query.entity_type,
        entity_id=query.entity_id,
        actor_user_id=query.actor_user_id,
        since=_aware(query.from_),
        until=_aware(query.to),
    )
    rows, total = await list_entries(
        session,
        filters,
        offset=query.offset,
        limit=query.limit,
        newest_first=query.sort_order == "desc",
    )
    items = [AuditEntryOut.model_validate(row) for row in rows]
    return page(items, total=total, page=query.page, limit=query.limit)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)
