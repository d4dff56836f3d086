"""`enqueue` and `cancel`: the API the rest of the code uses, inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import new_id, utcnow, wiring_of
from tenantry.core.dml import insert_unless_duplicate, update_returning
from tenantry.core.errors import Conflict, NotFound
from tenantry.core.events import job_event, publish_after_commit
from tenantry.core.jobs.models import Job, JobStatus
from tenantry.core.jobs.registry import JOB_TYPE, get_handler
from tenantry.core.jobs.transport import TRANSPORT
from tenantry.core.routing import after_commit
from tenantry.core.tenancy import require_tenant
from tenantry.core.tenantdb import outbox_bind, routing_of

log = logging.getLogger("tenantry.jobs")
DEFAULT_MAX_ATTEMPTS = 5
MAX_IDEMPOTENCY_KEY = 200


async def enqueue(
    session: AsyncSession,
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    organization_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
    idempotency_key: str | None = None,
    run_at: dt.datetime | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Insert a queued job in the caller's transaction; workers hear of it after commit.

    With an `idempotency_key`, a second call for the same `(job_type, key)` returns the
    existing job instead of creating another (and notifies nobody).
    """
    if not JOB_TYPE.match(job_type):
        raise ValueError(f"invalid job type {job_type!r}")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ValueError(f"idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    handler = get_handler(job_type)
    attempts = max_attempts or (handler.max_attempts if handler else None) or DEFAULT_MAX_ATTEMPTS
    if attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    values: dict[str, Any] = {
        "id": new_id(),
        "type": job_type,
        "payload": dict(payload or {}),
        "organization_id": organization_id,
        "created_by": created_by,
        "idempotency_key": idempotency_key,
        "max_attempts": attempts,
        "run_at": run_at or utcnow(),
        "status": JobStatus.QUEUED,
    }
    outbox = await outbox_bind(session)
    if outbox is not None:
        return await _enqueue_in_tenant_outbox(session, outbox, values)
    if idempotency_key is None:
        job = Job(**values)
        session.add(job)
        await session.flush()
    else:
        existing = await _insert_once(session, values)
        if existing is not None:
            return existing
        job = await session.get_one(Job, values["id"])
    # Announced before the workers are told: a told worker may run the job and announce
    # `job.running` at once, and `job.queued` must be on the stream before that.
    _announce(session, job)
    _dispatch_after_commit(session, job.id)
    return job


async def _enqueue_in_tenant_outbox(
    session: AsyncSession, outbox: Engine, values: dict[str, Any]
) -> Job:
    """Database per tenant, a transaction that wrote tenant rows: the job row goes to the
    tenant database's own `jobs` table, committed (or rolled back) with those rows, and is
    relayed to the control queue after commit (core/tenantdb.py `relay_outbox`; a crash
    before the relay is caught up by `relay_all`). With an `idempotency_key`, a job that
    already exists in the control queue wins at the relay: this one is dropped there."""
    await session.execute(insert(Job).values(**values), bind_arguments={"bind": outbox})
    routing = routing_of(session)
    organization_id = require_tenant(session).organization_id
    transport = wiring_of(session).get(TRANSPORT)

    async def relay() -> None:
        if routing is None:  # pragma: no cover - outbox_bind returned an engine
            return
        moved = await routing.relay_outbox(organization_id)
        if transport is not None and moved:
            await transport.notify(moved)

    job = Job(**values)  # a detached copy for the caller: the row lives in the outbox
    _announce(session, job)  # before the relay makes the job visible to workers
    after_commit(session, relay)
    return job


def _announce(session: AsyncSession, job: Job) -> None:
    """`job.<status>` on the organization's event stream once the transaction commits."""
    if job.organization_id is None:
        return
    event = job_event(
        job_id=job.id,
        job_type=job.type,
        status=str(job.status),
        progress=job.progress or 0,
        message=job.message,
    )
    publish_after_commit(session, job.organization_id, [event])


async def _insert_once(session: AsyncSession, values: dict[str, Any]) -> Job | None:
    """Insert unless `(type, idempotency_key)` exists; return the existing job if it does."""
    if await insert_unless_duplicate(session, Job, values, ["type", "idempotency_key"]):
        return None
    return (
        await session.scalars(
            select(Job).where(
                Job.type == values["type"], Job.idempotency_key == values["idempotency_key"]
            )
        )
    ).one()


def _dispatch_after_commit(session: AsyncSession, job_id: uuid.UUID) -> None:
    transport = wiring_of(session).get(TRANSPORT)
    if transport is None:
        return  # no transport bound here: a worker polling the table will find it

    async def notify() -> None:
        await transport.notify([job_id])

    after_commit(session, notify)


async def cancel(session: AsyncSession, job_id: uuid.UUID) -> Job:
    """Cancel a queued job now; a running one is asked to stop at its next progress report.

    Raises `NotFound` for an unknown id and `Conflict` for a job that already finished.
    """
    now = utcnow()
    cancelled = (
        await update_returning(
            session,
            Job,
            [Job.id == job_id, Job.status == JobStatus.QUEUED],
            {"status": JobStatus.CANCELLED, "cancel_requested": True, "finished_at": now},
            [Job.id],
        )
    ).scalar_one_or_none()
    if cancelled is None:
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound("Job not found")
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        raise Conflict("The job has already finished")
    if cancelled is not None:
        _announce(session, job)
    return job
