"""Daily usage counters per organization, kept cheaply and flushed by a scheduled job.

Requests and active users are counted by the tenant gate (`record_request`, once per
request under `/orgs/{orgId}/`), records created by a flush listener (new tenant rows,
audit entries and counters themselves excluded). They sit in process memory — no write
per request — and the `plans.flush_usage` job (every 5 minutes) adds them to the
`usage_daily` rows (requests and records are sums of deltas; active users the largest
distinct count seen; storage bytes the organization's current total).
`GET /orgs/{orgId}/usage` answers the flushed rows plus what this process holds.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tenantry.core.db import TenantOwned
from tenantry.core.tenancy import TenantContext, bind_tenant, unbind_tenant
from tenantry.modules.files.usage import storage_used
from tenantry.modules.orgs.models import Organization
from tenantry.modules.plans.models import UsageDaily

Key = tuple[uuid.UUID, dt.date]
_NOT_RECORDS = frozenset({"audit_logs", "usage_daily", "storage_usage", "idempotency_keys"})


@dataclass
class _Day:
    requests: int = 0
    records_created: int = 0
    users: set[uuid.UUID] = field(default_factory=set)


class UsageCounters:
    """One process's unflushed counts."""

    def __init__(self) -> None:
        self.days: dict[Key, _Day] = defaultdict(_Day)

    def request(self, org_id: uuid.UUID, day: dt.date, user_id: uuid.UUID | None) -> None:
        entry = self.days[(org_id, day)]
        entry.requests += 1
        if user_id is not None:
            entry.users.add(user_id)

    def records(self, org_id: uuid.UUID, day: dt.date, count: int) -> None:
        self.days[(org_id, day)].records_created += count

    def take(self) -> dict[Key, _Day]:
        taken, self.days = dict(self.days), defaultdict(_Day)
        return taken

    def pending(self, org_id: uuid.UUID) -> dict[dt.date, _Day]:
        return {day: v for (org, day), v in self.days.items() if org == org_id}


COUNTERS = UsageCounters()


def record_request(org_id: uuid.UUID, user_id: uuid.UUID | None, at: dt.datetime) -> None:
    COUNTERS.request(org_id, at.date(), user_id)


_PENDING_RECORDS = "usage_pending_records"


def _count_new_records(session: Session, _context: Any, _instances: Any) -> None:
    """Remember the new records of this transaction; they count once it commits."""
    per_org: dict[uuid.UUID, int] = session.info.setdefault(_PENDING_RECORDS, defaultdict(int))
    for obj in session.new:
        if not isinstance(obj, TenantOwned) or obj.organization_id is None:
            continue
        if getattr(obj, "__tablename__", None) not in _NOT_RECORDS:
            per_org[obj.organization_id] += 1


def _records_committed(session: Session) -> None:
    per_org: dict[uuid.UUID, int] = session.info.pop(_PENDING_RECORDS, None) or {}
    today = dt.datetime.now(dt.UTC).date()
    for org_id, count in per_org.items():
        COUNTERS.records(org_id, today, count)


def _records_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_RECORDS, None)


for _name, _listener in (
    ("before_flush", _count_new_records),
    ("after_commit", _records_committed),
    ("after_rollback", _records_rolled_back),
):
    if not event.contains(Session, _name, _listener):
        event.listen(Session, _name, _listener)


def _upsert(session: AsyncSession, row: dict[str, Any]) -> Any:
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = UsageDaily.__table__
    statement = insert(table).values(**row)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["organization_id", "day"],
        set_={
            "requests": table.c.requests + excluded.requests,
            "records_created": table.c.records_created + excluded.records_created,
            "active_users": _greatest(dialect, table.c.active_users, excluded.active_users),
            "storage_bytes": excluded.storage_bytes,
        },
    )


def _greatest(dialect: str, a: Any, b: Any) -> Any:
    from sqlalchemy import func

    return func.greatest(a, b) if dialect == "postgresql" else func.max(a, b)


async def flush(session: AsyncSession) -> int:
    """Add this process's counts to `usage_daily` (each organization bound in turn)."""
    taken = COUNTERS.take()
    try:
        ids = {org_id for org_id, _day in taken}
        live = set(
            (await session.scalars(select(Organization.id).where(Organization.id.in_(ids)))).all()
        )
        for (org_id, day), counts in sorted(taken.items(), key=lambda kv: str(kv[0])):
            if org_id not in live:  # deleted since (its rows went with it)
                continue
            bind_tenant(session, TenantContext.system(org_id))
            row = {
                "organization_id": org_id,
                "day": day,
                "requests": counts.requests,
                "records_created": counts.records_created,
                "active_users": len(counts.users),
                "storage_bytes": await storage_used(session, org_id),
            }
            await session.execute(_upsert(session, row))
            unbind_tenant(session)
    except BaseException:
        for key, counts in taken.items():  # not written: keep them for the next run
            entry = COUNTERS.days[key]
            entry.requests += counts.requests
            entry.records_created += counts.records_created
            entry.users |= counts.users
        raise
    return len(taken)


async def daily(
    session: AsyncSession, org_id: uuid.UUID, start: dt.date, end: dt.date
) -> list[dict[str, Any]]:
    """Every day of [start, end] (zeros where nothing happened), flushed + pending counts."""
    rows = (
        await session.scalars(
            select(UsageDaily).where(UsageDaily.day >= start, UsageDaily.day <= end)
        )
    ).all()
    stored = {r.day: r for r in rows}
    pending = COUNTERS.pending(org_id)
    out: list[dict[str, Any]] = []
    day = start
    while day <= end:
        row, extra = stored.get(day), pending.get(day)
        out.append(
            {
                "day": day,
                "requests": (row.requests if row else 0) + (extra.requests if extra else 0),
                "active_users": max(
                    row.active_users if row else 0, len(extra.users) if extra else 0
                ),
                "records_created": (row.records_created if row else 0)
                + (extra.records_created if extra else 0),
                "storage_bytes": row.storage_bytes if row else 0,
            }
        )
        day += dt.timedelta(days=1)
    return out
