"""`record(...)`: append one audit entry in the caller's transaction.

Every tenant mutation calls it once, after making its change:

    await record(session, "project.updated", "project", project.id,
                 changes=diff(before, snapshot(project, FIELDS)))

The actor (user and/or API key) comes from the session's `TenantContext`; the IP, user
agent and request id from the request (`remember_request`, done by the tenant gate
for every `/orgs/{orgId}/...` route). Values of secret-looking fields are redacted.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import ColumnElement, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import Versioned
from tenantry.core.events import Outgoing, publish_after_commit
from tenantry.core.listing import created_at_key, offset_page
from tenantry.core.permissions import RESOURCES
from tenantry.core.ratelimit import client_ip
from tenantry.core.tenancy import require_tenant
from tenantry.core.tenantdb import tenant_bind
from tenantry.modules.audit.models import AuditLog

REDACTED = "[redacted]"
SECRET_FIELD = re.compile(r"password|secret|token|hash|(^|_)key$|^key", re.IGNORECASE)
_REQUEST_KEY = "audit_request"
USER_AGENT_MAX = 512


@dataclass(frozen=True, slots=True)
class RequestMeta:
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


def request_meta(request: Request) -> RequestMeta:
    agent = request.headers.get("user-agent")
    return RequestMeta(
        ip=client_ip(request) or None,
        user_agent=agent[:USER_AGENT_MAX] if agent else None,
        request_id=getattr(request.state, "request_id", None),
    )


def remember_request(session: AsyncSession, request: Request) -> None:
    """Attach the request's IP, user agent and id to the session for later entries."""
    session.info[_REQUEST_KEY] = request_meta(request)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    return str(value)


def redact(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`{field: [old, new]}` with the values of secret-looking fields replaced."""
    cleaned: dict[str, Any] = {}
    for field, pair in changes.items():
        if SECRET_FIELD.search(field):
            cleaned[field] = [REDACTED, REDACTED]
        else:
            old, new = pair
            cleaned[field] = [_jsonable(old), _jsonable(new)]
    return cleaned


def snapshot(obj: object, fields: Iterable[str]) -> dict[str, Any]:
    """The current values of `fields` on `obj` (to diff against after a change)."""
    return {field: getattr(obj, field) for field in fields}


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{field: (old, new)}` for the fields whose value changed (missing = None)."""
    return {
        field: (before.get(field), after.get(field))
        for field in dict.fromkeys([*before, *after])
        if before.get(field) != after.get(field)
    }


def created(after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return diff({}, after)


def deleted(before: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return diff(before, {})


async def record(
    session: AsyncSession,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | None,
    changes: Mapping[str, Any] | None = None,
) -> AuditLog:
    """Append one entry for the session's organization and actor (same transaction)."""
    entry = _entry(session, action, entity_type, entity_id, changes)
    session.add(entry)
    await session.flush()
    _announce(session, [entry])
    return entry


async def record_many(
    session: AsyncSession,
    action: str,
    entity_type: str,
    entries: Sequence[tuple[uuid.UUID | None, Mapping[str, Any]]],
    *,
    versions: Mapping[uuid.UUID, int] | None = None,
) -> list[AuditLog]:
    """One entry per `(entity_id, changes)`, written in one multi-row INSERT.

    `versions`: the entities' new versions when they were written without the ORM (a
    bulk UPDATE), for their events.
    """
    rows = [_entry(session, action, entity_type, i, changes) for i, changes in entries]
    session.add_all(rows)
    await session.flush()
    _announce(session, rows, versions)
    return rows


# The permission a subscriber of the event stream needs to receive an entity's events:
# the one that lets it GET the entity (API.md, Real-time events). An entity type not
# listed here (a generated resource: `<type>s:read` when that permission exists) falls
# back to `audit:read`, so nothing new is announced to someone who may not see it.
READ_PERMISSIONS: dict[str, str] = {
    "task": "tasks:read",
    "project": "projects:read",
    "file": "files:read",
    "membership": "members:read",
    "invitation": "members:read",
    "organization": "org:read",
    "api_key": "api_keys:manage",
}
# Actions on an entity readable more widely that are not for every reader of it.
ACTION_PERMISSIONS: dict[str, str] = {
    "organization.subscription_changed": "billing:read",
}


def read_permission(action: str, entity_type: str) -> str:
    """What a subscriber needs to receive the event of `action` on an `entity_type`."""
    if action in ACTION_PERMISSIONS:
        return ACTION_PERMISSIONS[action]
    if entity_type in READ_PERMISSIONS:
        return READ_PERMISSIONS[entity_type]
    for resource in RESOURCES:  # generated resources: plural name, singular entity type
        if entity_type in (resource[:-1], resource[:-2], resource[:-3] + "y"):
            return f"{resource}:read"
    return "audit:read"


def _announce(
    session: AsyncSession,
    entries: Sequence[AuditLog],
    known: Mapping[uuid.UUID, int] | None = None,
) -> None:
    """Each entry becomes an event of the stream once the transaction commits."""
    # The entities' versions as this flush left them, read from the loaded state only (an
    # expired attribute would be a lazy load here); None when it is not loaded.
    versions = {
        state.dict.get("id"): state.dict.get("version")
        for state in (inspect(obj) for obj in session.identity_map.values())
        if isinstance(state.obj(), Versioned)
    }
    versions.update(known or {})
    by_org: dict[uuid.UUID, list[Outgoing]] = {}
    for entry in entries:
        by_org.setdefault(entry.organization_id, []).append(
            Outgoing(
                name=entry.action,
                permission=read_permission(entry.action, entry.entity_type),
                data={
                    "entityType": entry.entity_type,
                    "entityId": _jsonable(entry.entity_id),
                    "action": entry.action,
                    "version": versions.get(entry.entity_id) if entry.entity_id else None,
                    "actorUserId": _jsonable(entry.actor_user_id),
                    "actorApiKeyId": _jsonable(entry.actor_api_key_id),
                    "changes": entry.changes,
                    "at": _jsonable(entry.created_at),
                },
            )
        )
    for org_id, events in by_org.items():
        publish_after_commit(session, org_id, events)


def _entry(
    session: AsyncSession,
    action: str,
    entity_type: str,
    entity_id: uuid.UUID | None,
    changes: Mapping[str, Any] | None,
) -> AuditLog:
    context = require_tenant(session)
    meta: RequestMeta = session.info.get(_REQUEST_KEY) or RequestMeta()
    return AuditLog(
        organization_id=context.organization_id,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        actor_user_id=context.user_id,
        actor_api_key_id=context.api_key_id,
        changes=redact(changes or {}),
        ip=meta.ip,
        user_agent=meta.user_agent,
        request_id=meta.request_id,
    )


@dataclass(frozen=True, slots=True)
class AuditFilters:
    action: str | None = None
    entity_type: str | None = None
    entity_id: uuid.UUID | None = None
    actor_user_id: uuid.UUID | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


async def list_entries(
    session: AsyncSession, filters: AuditFilters, *, offset: int, limit: int, newest_first: bool
) -> tuple[list[AuditLog], int]:
    """The bound organization's entries (scoped automatically), filtered, newest first."""
    conditions: list[ColumnElement[bool]] = []
    if filters.action is not None:
        conditions.append(AuditLog.action == filters.action)
    if filters.entity_type is not None:
        conditions.append(AuditLog.entity_type == filters.entity_type)
    if filters.entity_id is not None:
        conditions.append(AuditLog.entity_id == filters.entity_id)
    if filters.actor_user_id is not None:
        conditions.append(AuditLog.actor_user_id == filters.actor_user_id)
    if filters.since is not None:
        conditions.append(AuditLog.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(AuditLog.created_at <= filters.until)
    tenant = await tenant_bind(session)
    if tenant is not None:
        return await _merged_page(
            session, conditions, tenant, offset=offset, limit=limit, newest_first=newest_first
        )
    return await offset_page(
        session,
        select(AuditLog).where(*conditions),
        key=created_at_key(AuditLog.created_at),
        id_column=AuditLog.id,
        descending=newest_first,
        offset=offset,
        limit=limit,
    )


async def _merged_page(
    session: AsyncSession,
    conditions: Sequence[ColumnElement[bool]],
    tenant: Engine,
    *,
    offset: int,
    limit: int,
    newest_first: bool,
) -> tuple[list[AuditLog], int]:
    """Database per tenant: membership and organization entries are in the control
    database, resource entries in the tenant's; one page of both, in one order."""
    columns = (AuditLog.created_at, AuditLog.id)
    order = [c.desc() for c in columns] if newest_first else [c.asc() for c in columns]
    rows: list[AuditLog] = []
    total = 0
    for bind in (session.sync_session.bind, tenant):
        where = select(AuditLog).where(*conditions)
        found = await session.scalars(
            where.order_by(*order).limit(offset + limit), bind_arguments={"bind": bind}
        )
        rows.extend(found)
        counted = where.with_only_columns(func.count(), maintain_column_froms=True)
        total += int(await session.scalar(counted, bind_arguments={"bind": bind}) or 0)
    rows.sort(key=lambda entry: (entry.created_at, entry.id), reverse=newest_first)
    return rows[offset : offset + limit], total
