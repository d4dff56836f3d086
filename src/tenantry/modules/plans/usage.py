"""Daily usage counters per organization, kept cheaply and flushed by a scheduled job.

Requests and active users are counted by the tenant gate (its usage step, once per
request under `/orgs/{orgId}/`), records created by a commit listener (new tenant rows,
audit entries and counters themselves excluded). They sit in a `UsageStore`
(`counters.py`: process memory without `REDIS_URL`, Redis shared by every process with
it) — no database write per request — and the `plans.flush_usage` job (every 5 minutes)
takes them (read-and-reset, atomic) and adds them to the `usage_daily` rows (requests and
records are sums of deltas; active users the day's distinct count; storage bytes the
organization's current total). `GET /orgs/{orgId}/usage` answers the flushed rows plus
the pending counts.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tenantry.core.db import Database, TenantOwned, Wired, wiring_of
from tenantry.core.dml import upsert
from tenantry.core.routing import end_transaction
from tenantry.core.tenancy import TenantContext, bind_tenant, unbind_tenant
from tenantry.modules.files.usage import storage_used
from tenantry.modules.orgs.models import Organization
from tenantry.modules.plans.counters import MemoryUsage, UsageStore, create_usage_store
from tenantry.modules.plans.models import UsageDaily

log = logging.getLogger(__name__)
_NOT_RECORDS = frozenset({"audit_logs", "usage_daily", "storage_usage", "idempotency_keys"})
_UNBOUND = MemoryUsage()  # sessions of a database nobody bound (scripts): counts stay local


USAGE: Wired[UsageStore] = Wired("usage store")


def bind_usage(database: Database, store: UsageStore) -> None:
    """Every session of `database` (requests, commit hooks, the flush job) uses `store`."""
    database.wiring.provide(USAGE, store)


@asynccontextmanager
async def usage_bound(database: Database) -> AsyncIterator[None]:
    """`tenantry worker`: bind the store (Redis with `REDIS_URL`) for the usage flush."""
    settings = database.settings
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    store = create_usage_store(redis, settings.redis_key_prefix)
    bind_usage(database, store)
    try:
        yield
    finally:
        await store.close()
        if redis is not None:
            await redis.aclose()


def store_of(session: AsyncSession | Session) -> UsageStore:
    return wiring_of(session).get(USAGE) or _UNBOUND


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
    store = store_of(session)
    for org_id, count in per_org.items():
        store.records(org_id, today, count)


def _records_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING_RECORDS, None)


# Registered on the app's sessions by tenantry/sessions.py.
USAGE_LISTENERS = (
    ("before_flush", _count_new_records),
    ("after_commit", _records_committed),
    ("after_rollback", _records_rolled_back),
)


def _upsert(session: AsyncSession, row: dict[str, Any]) -> Any:
    dialect = session.get_bind().dialect.name
    table = UsageDaily.__table__
    return upsert(
        session,
        table,
        ["organization_id", "day"],
        lambda new: {
            "requests": table.c.requests + new.requests,
            "records_created": table.c.records_created + new.records_created,
            "active_users": _greatest(dialect, table.c.active_users, new.active_users),
            "storage_bytes": new.storage_bytes,
        },
    ).values(**row)


def _greatest(dialect: str, a: Any, b: Any) -> Any:
    return func.max(a, b) if dialect == "sqlite" else func.greatest(a, b)


async def flush(session: AsyncSession, store: UsageStore | None = None) -> int:
    """Add the pending counts to `usage_daily`, one organization-day per transaction.

    One transaction each, not one for all: with a database per tenant the storage figure
    is read in the organization's own database, and a transaction keeps a connection to
    every database it read until it ends — one over every organization with usage would
    need more tenant engines than the per-server budget allows (`TenantUnavailable`, every
    run). If a run fails midway, what it wrote stays written and only the rest is given
    back to the store.
    """
    store = store or store_of(session)
    taken = await store.take()
    pending = dict(taken)
    try:
        ids = {org_id for org_id, _day in taken}
        live = set(
            (await session.scalars(select(Organization.id).where(Organization.id.in_(ids)))).all()
        )
        for (org_id, day), counts in sorted(taken.items(), key=lambda kv: str(kv[0])):
            if org_id in live:  # else deleted since (its rows went with it)
                bind_tenant(session, TenantContext.system(org_id))
                row = {
                    "organization_id": org_id,
                    "day": day,
                    "requests": counts.requests,
                    "records_created": counts.records_created,
                    "active_users": counts.active_users,
                    "storage_bytes": await storage_used(session, org_id),
                }
                await session.execute(_upsert(session, row))
                unbind_tenant(session)
                await end_transaction(session)
            del pending[(org_id, day)]
    except BaseException:
        try:
            await store.give_back(pending)  # not written: keep them for the next run
        except (RedisError, OSError) as exc:
            log.error("usage counts of %d organization-days lost: %s", len(pending), exc)
        raise
    return len(taken)


async def daily(
    session: AsyncSession,
    org_id: uuid.UUID,
    start: dt.date,
    end: dt.date,
    store: UsageStore | None = None,
) -> list[dict[str, Any]]:
    """Every day of [start, end] (zeros where nothing happened), flushed + pending counts."""
    rows = (
        await session.scalars(
            select(UsageDaily).where(UsageDaily.day >= start, UsageDaily.day <= end)
        )
    ).all()
    stored = {r.day: r for r in rows}
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    try:
        pending = await (store or store_of(session)).pending(org_id, days)
    except (RedisError, OSError) as exc:  # counting is best-effort: show what is flushed
        log.warning("pending usage unavailable: %s", exc)
        pending = {}
    out: list[dict[str, Any]] = []
    day = start
    while day <= end:
        row, extra = stored.get(day), pending.get(day)
        out.append(
            {
                "day": day,
                "requests": (row.requests if row else 0) + (extra.requests if extra else 0),
                "active_users": max(
                    row.active_users if row else 0, extra.active_users if extra else 0
                ),
                "records_created": (row.records_created if row else 0)
                + (extra.records_created if extra else 0),
                "storage_bytes": row.storage_bytes if row else 0,
            }
        )
        day += dt.timedelta(days=1)
    return out
