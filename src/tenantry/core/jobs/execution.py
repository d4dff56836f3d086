"""Running one claimed job: its session, context, heartbeat, and how the attempt ends."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import Database
from tenantry.core.events import EVENTS, job_event
from tenantry.core.jobs import store
from tenantry.core.jobs.context import JobCancelled, JobContext, JobError
from tenantry.core.jobs.models import Job, JobStatus
from tenantry.core.jobs.registry import get_handler
from tenantry.core.jobs.session import open_job_session
from tenantry.core.routing import run_after_commit, run_after_rollback

log = logging.getLogger("tenantry.jobs")

NO_HANDLER = "No handler is registered for this job type."


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with "equal jitter": a delay in [d/2, d], d = base * 2^(n-1)."""
    ceiling: float = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def safe_error(exc: BaseException) -> str:
    """What a tenant may see: a `JobError`'s own message, otherwise only the error's kind."""
    if isinstance(exc, JobError):
        return exc.public_message
    return f"Unexpected error ({type(exc).__name__}); details are in the worker log."


class JobExecutor:
    """Runs claimed jobs. `releasing`/`lost` say why a run was cancelled (shutdown, lease)."""

    def __init__(
        self, database: Database, settings: Settings, clock: Callable[[], dt.datetime]
    ) -> None:
        self.database = database
        self.settings = settings
        self.clock = clock
        self.lease = settings.jobs_lease_seconds
        self.report_interval = min(1.0, self.lease / 3)
        self.releasing: set[uuid.UUID] = set()
        self.lost: set[uuid.UUID] = set()
        # Progress reported but not written (SQLite: the job holds the write lock), by job:
        # what `GET /jobs/{id}` of this process shows while the job runs.
        self.reported: dict[uuid.UUID, tuple[int, str | None]] = {}

    def forget(self, job_id: uuid.UUID) -> None:
        self.releasing.discard(job_id)
        self.lost.discard(job_id)

    async def run(self, job: Job) -> None:
        handler = get_handler(job.type)
        if handler is None:
            await self._failed(job, JobError(NO_HANDLER), retry_base=None)
            return
        await self._announce(job, JobStatus.RUNNING, job.progress or 0, job.message)
        session = open_job_session(self.database, job)
        ctx = JobContext(
            job_id=job.id,
            job_type=job.type,
            organization_id=job.organization_id,
            payload=dict(job.payload or {}),
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            session=session,
            _write_progress=partial(self._write_progress, job, session),
            report_interval=self.report_interval,
            cancel_requested=job.cancel_requested,
        )
        stop_beat = asyncio.Event()
        runner = asyncio.current_task()
        assert runner is not None
        beat = asyncio.create_task(self._heartbeat(job, ctx, runner, stop_beat))
        committed = False
        try:
            try:
                try:
                    outcome = await handler.func(ctx)
                finally:  # from here on, nothing cancels this run for a lost lease
                    stop_beat.set()
                    await asyncio.shield(beat)
                result = _jsonable(outcome)
                if await store.mark_succeeded(
                    session, job.id, job.attempts, result, now=self.clock()
                ):
                    await session.commit()
                    committed = True
                else:
                    await session.rollback()
                    log.warning("job %s lost its lease before finishing; work rolled back", job.id)
            except BaseException:
                await asyncio.shield(session.rollback())
                raise
            finally:
                stop_beat.set()
                self.reported.pop(job.id, None)
                await asyncio.shield(session.close())
        except JobCancelled:
            if await store.mark_cancelled(self.database, job.id, job.attempts, now=self.clock()):
                await self._announce(job, JobStatus.CANCELLED, job.progress or 0, job.message)
            log.info("job %s (%s) cancelled while running", job.id, job.type)
        except asyncio.CancelledError:
            if job.id in self.releasing:
                await store.release(self.database, job.id, job.attempts, now=self.clock())
                log.info("job %s released to the queue (shutdown)", job.id)
            elif job.id in self.lost:
                log.warning("job %s stopped: its lease was taken over", job.id)
            raise
        except Exception as exc:
            await self._failed(job, exc, retry_base=handler.retry_base_seconds)
        if committed:
            await run_after_commit(session)  # the job's own announcements (its audit) first
            await self._announce(job, JobStatus.SUCCEEDED, 100, job.message)
        else:
            await run_after_rollback(session)  # e.g. a stored object whose row was not kept

    async def _failed(self, job: Job, exc: Exception, *, retry_base: float | None) -> None:
        log.error(
            "job %s (%s) attempt %d/%d failed: %s",
            job.id,
            job.type,
            job.attempts,
            job.max_attempts,
            safe_error(exc),
            exc_info=None if isinstance(exc, JobError) else exc,  # the trace stays in the log
        )
        retryable = not isinstance(exc, JobError) or exc.retry
        now = self.clock()
        retry_at = None
        if retryable and job.attempts < job.max_attempts:
            base = self.settings.jobs_retry_base_seconds if retry_base is None else retry_base
            delay = backoff_seconds(job.attempts, base, self.settings.jobs_retry_max_seconds)
            retry_at = now + dt.timedelta(seconds=delay)
        status = await store.retry_or_fail(
            self.database, job.id, job.attempts, error=safe_error(exc), retry_at=retry_at, now=now
        )
        if status is not None:
            await self._announce(job, JobStatus(status), job.progress or 0, safe_error(exc))
        if status == JobStatus.FAILED:
            log.error(
                "job %s (%s) failed for good after %d attempt(s)", job.id, job.type, job.attempts
            )

    async def _heartbeat(
        self, job: Job, ctx: JobContext, runner: asyncio.Task[Any], stop: asyncio.Event
    ) -> None:
        interval = max(self.lease / 3, 0.05)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                alive, cancel = await store.heartbeat(
                    self.database, job.id, job.attempts, now=self.clock(), lease=self.lease
                )
            except Exception:
                log.exception("job %s heartbeat failed", job.id)
                continue
            if cancel:
                ctx.cancel_requested = True
            if not alive and not stop.is_set():
                self.lost.add(job.id)
                runner.cancel()
                return

    async def _write_progress(
        self, job: Job, session: AsyncSession, progress: int, message: str | None
    ) -> bool:
        job.progress, job.message = progress, message or job.message  # the last report
        if self.database.is_sqlite and session.in_transaction():
            # The handler holds SQLite's write lock: our write would wait on it. The report
            # is still announced (the stream shows it live; the row shows it at the end).
            self.reported[job.id] = (progress, job.message)
            await self._announce(job, JobStatus.RUNNING, progress, job.message, "job.progress")
            return False
        flag = await store.write_progress(self.database, job.id, job.attempts, progress, message)
        if flag is not None:
            await self._announce(job, JobStatus.RUNNING, progress, job.message, "job.progress")
        return bool(flag)

    async def _announce(
        self,
        job: Job,
        status: JobStatus,
        progress: int,
        message: str | None,
        name: str | None = None,
    ) -> None:
        await self.announce(job.organization_id, job.id, job.type, status, progress, message, name)

    async def announce(
        self,
        organization_id: uuid.UUID | None,
        job_id: uuid.UUID,
        job_type: str,
        status: JobStatus,
        progress: int,
        message: str | None,
        name: str | None = None,
    ) -> None:
        """A job's new state on its organization's event stream (after it was written)."""
        sink = self.database.wiring.get(EVENTS)
        if sink is None or organization_id is None:
            return
        event = job_event(
            job_id=job_id,
            job_type=job_type,
            status=str(status),
            progress=progress,
            message=message,
            name=name,
        )
        try:
            await sink.publish(organization_id, [event])
        except Exception:  # the state is written; a lost announcement is not a failure
            log.warning("job %s: event not published", job_id, exc_info=True)


def _jsonable(result: Any) -> Any:
    """Handlers return JSON-able results; anything else fails the attempt clearly."""
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError) as exc:
        raise JobError("The job returned a result that is not JSON.", retry=False) from exc
