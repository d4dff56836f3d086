"""The state machine of a job row, as atomic, fenced statements on the `jobs` table.

Every transition after a claim is fenced by `(id, status='running', attempts)`: a worker
whose lease expired and whose job was claimed again cannot overwrite the new attempt.
Each function runs in its own short transaction (write-locking on SQLite).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import Database
from tenantry.core.dml import update_returning
from tenantry.core.jobs.models import Job, JobStatus, JobWorker

WORKER_LOST = "The worker running this job stopped responding."


def _fence(job_id: uuid.UUID, attempt: int) -> ColumnElement[bool]:
    return and_(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.attempts == attempt)


def _claim_values(worker_id: str, now: dt.datetime, lease: float) -> dict[str, Any]:
    return {
        "status": JobStatus.RUNNING,
        "attempts": Job.attempts + 1,
        "lease_until": now + dt.timedelta(seconds=lease),
        "claimed_by": worker_id[:100],
        "started_at": now,
    }


async def claim_next(
    database: Database,
    worker_id: str,
    *,
    now: dt.datetime,
    lease: float,
    limit: int,
    due_before: dt.datetime | None = None,
    job_types: Collection[str] | None = None,
) -> list[Job]:
    """Claim up to `limit` due jobs, oldest `run_at` first (SKIP LOCKED on PostgreSQL and
    MariaDB; SQLite serialises writers with BEGIN IMMEDIATE)."""
    due: list[ColumnElement[bool]] = [
        Job.status == JobStatus.QUEUED,
        Job.run_at <= (due_before or now),
    ]
    if job_types is not None:
        due.append(Job.type.in_(list(job_types)))
    async with database.transaction() as session:
        result = await update_returning(
            session,
            Job,
            due,
            _claim_values(worker_id, now, lease),
            [Job],
            order_by=[Job.run_at],
            limit=limit,
            skip_locked=not database.is_sqlite,
        )
        return list(result.scalars().all())


async def claim_by_id(
    database: Database, job_id: uuid.UUID, worker_id: str, *, now: dt.datetime, lease: float
) -> Job | None:
    """Claim one job named by the transport, if it is still queued and due."""
    async with database.transaction() as session:
        return (
            (
                await update_returning(
                    session,
                    Job,
                    [Job.id == job_id, Job.status == JobStatus.QUEUED, Job.run_at <= now],
                    _claim_values(worker_id, now, lease),
                    [Job],
                )
            )
            .scalars()
            .one_or_none()
        )


async def heartbeat(
    database: Database, job_id: uuid.UUID, attempt: int, *, now: dt.datetime, lease: float
) -> tuple[bool, bool]:
    """Extend the lease; return (still ours, cancel requested)."""
    async with database.transaction() as session:
        flag = (
            await update_returning(
                session,
                Job,
                [_fence(job_id, attempt)],
                {"lease_until": now + dt.timedelta(seconds=lease)},
                [Job.cancel_requested],
            )
        ).scalar_one_or_none()
    return flag is not None, bool(flag)


async def write_progress(
    database: Database, job_id: uuid.UUID, attempt: int, progress: int, message: str | None
) -> bool | None:
    """Record progress; return the cancel flag (None when the job is no longer ours)."""
    values: dict[str, Any] = {"progress": progress}
    if message is not None:
        values["message"] = message
    async with database.transaction() as session:
        flag = (
            await update_returning(
                session, Job, [_fence(job_id, attempt)], values, [Job.cancel_requested]
            )
        ).scalar_one_or_none()
    return None if flag is None else bool(flag)


async def mark_succeeded(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, result: Any, *, now: dt.datetime
) -> bool:
    """In the handler's own transaction, so its work and the success commit together."""
    return (
        await update_returning(
            session,
            Job,
            [_fence(job_id, attempt)],
            {
                "status": JobStatus.SUCCEEDED,
                "progress": 100,
                "result": result,
                "error": None,
                "lease_until": None,
                "finished_at": now,
            },
            [Job.id],
        )
    ).scalar_one_or_none() is not None


async def mark_cancelled(
    database: Database, job_id: uuid.UUID, attempt: int, *, now: dt.datetime
) -> bool:
    async with database.transaction() as session:
        return (
            await update_returning(
                session,
                Job,
                [_fence(job_id, attempt)],
                {"status": JobStatus.CANCELLED, "lease_until": None, "finished_at": now},
                [Job.id],
            )
        ).scalar_one_or_none() is not None


async def retry_or_fail(
    database: Database,
    job_id: uuid.UUID,
    attempt: int,
    *,
    error: str,
    retry_at: dt.datetime | None,
    now: dt.datetime,
) -> str | None:
    """Back to `queued` at `retry_at`, or `failed` when `retry_at` is None."""
    if retry_at is None:
        values: dict[str, Any] = {"status": JobStatus.FAILED, "finished_at": now}
    else:
        values = {"status": JobStatus.QUEUED, "run_at": retry_at, "claimed_by": None}
    async with database.transaction() as session:
        return (
            await update_returning(
                session,
                Job,
                [_fence(job_id, attempt)],
                dict(error=error, lease_until=None, **values),
                [Job.status],
            )
        ).scalar_one_or_none()


async def release(database: Database, job_id: uuid.UUID, attempt: int, *, now: dt.datetime) -> bool:
    """Give an interrupted job back to the queue (graceful shutdown): the attempt is undone."""
    async with database.transaction() as session:
        return (
            await update_returning(
                session,
                Job,
                [_fence(job_id, attempt)],
                {
                    "status": JobStatus.QUEUED,
                    "attempts": Job.attempts - 1,
                    "run_at": now,
                    "lease_until": None,
                    "claimed_by": None,
                },
                [Job.id],
            )
        ).scalar_one_or_none() is not None


@dataclass(frozen=True)
class Abandoned:
    """A running job whose worker vanished, in the state the sweep left it in."""

    id: uuid.UUID
    organization_id: uuid.UUID | None
    type: str
    status: JobStatus
    progress: int
    message: str | None


async def recover_expired_leases(database: Database, *, now: dt.datetime) -> list[Abandoned]:
    """Running jobs whose worker vanished: back to `queued` (or `failed` after the last try).

    Returns what changed: the queued ones are re-dispatched by the transport, and every
    change is announced on its organization's event stream.
    """
    async with database.transaction() as session:
        return await _requeue_abandoned(session, Job.lease_until < now, now=now)


async def _requeue_abandoned(
    session: AsyncSession, abandoned: ColumnElement[bool], *, now: dt.datetime
) -> list[Abandoned]:
    """Running jobs matching `abandoned`: cancelled if asked, failed after the last try,
    else queued again. `attempts` is kept, so the old attempt's fence no longer matches
    once the job is queued or claimed again: a late write of the lost worker is refused.
    """
    lost = and_(Job.status == JobStatus.RUNNING, abandoned)
    outcomes: list[tuple[JobStatus, list[ColumnElement[bool]], dict[str, Any]]] = [
        (
            JobStatus.CANCELLED,
            [lost, Job.cancel_requested.is_(True)],
            {"status": JobStatus.CANCELLED, "lease_until": None, "finished_at": now},
        ),
        (
            JobStatus.FAILED,
            [lost, Job.attempts >= Job.max_attempts],
            {
                "status": JobStatus.FAILED,
                "error": WORKER_LOST,
                "lease_until": None,
                "finished_at": now,
            },
        ),
        (
            JobStatus.QUEUED,
            [lost],
            {"status": JobStatus.QUEUED, "lease_until": None, "claimed_by": None, "run_at": now},
        ),
    ]
    changed: list[Abandoned] = []
    for status, where, values in outcomes:
        result = await update_returning(
            session,
            Job,
            where,
            values,
            [Job.id, Job.organization_id, Job.type, Job.progress, Job.message],
        )
        changed.extend(
            Abandoned(row.id, row.organization_id, row.type, status, row.progress or 0, row.message)
            for row in result
        )
    return changed


# -- worker liveness (the `job_workers` table) ---------------------------------------------


async def beat_worker(database: Database, worker_id: str, *, now: dt.datetime) -> bool:
    """Bump this worker's heartbeat counter; False when its row had to be (re)created."""
    key = worker_id[:100]
    async with database.transaction() as session:
        bumped = (
            await update_returning(
                session,
                JobWorker,
                [JobWorker.id == key],
                {"beats": JobWorker.beats + 1, "heartbeat_at": now},
                [JobWorker.id],
            )
        ).scalar_one_or_none()
        if bumped is not None:
            return True
        session.add(JobWorker(id=key, beats=1, started_at=now, heartbeat_at=now))
    return False


async def worker_beats(database: Database) -> dict[str, int]:
    """Every registered worker's heartbeat counter."""
    async with database.session(write=False) as session:
        rows = await session.execute(select(JobWorker.id, JobWorker.beats))
        return {row.id: row.beats for row in rows}


async def reap_workers(
    database: Database, dead: Mapping[str, int], *, now: dt.datetime
) -> list[Abandoned]:
    """Forget workers whose counter still reads as observed, and requeue their jobs.

    The delete is conditional on the observed `beats`: a worker that beat in between is
    alive and keeps its row and its jobs. Returns what changed (see `recover_expired_leases`).
    """
    if not dead:
        return []
    async with database.transaction() as session:
        gone: list[str] = []
        for worker_id, beats in dead.items():
            deleted = await session.execute(
                delete(JobWorker)
                .where(JobWorker.id == worker_id, JobWorker.beats == beats)
                .returning(JobWorker.id)
                .execution_options(synchronize_session=False)
            )
            gone.extend(deleted.scalars().all())
        if not gone:
            return []
        return await _requeue_abandoned(session, Job.claimed_by.in_(gone), now=now)


async def forget_worker(database: Database, worker_id: str) -> None:
    """A worker that stops gracefully removes its row (its jobs were finished or released)."""
    async with database.transaction() as session:
        await session.execute(
            delete(JobWorker)
            .where(JobWorker.id == worker_id[:100])
            .execution_options(synchronize_session=False)
        )
