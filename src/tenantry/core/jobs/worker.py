"""The worker: claims jobs, runs their handlers under a lease, retries, sweeps, schedules.

One class for both transports. Embedded: a poll loop woken by in-process notifications.
Redis: ids arrive on the stream and are claimed by id; the poll loop still claims rows
overdue past `run_at` (lost or delayed messages, retries) and recovers expired leases,
so no job depends on a Redis message being delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.jobs import store
from tenantry.core.jobs.context import JobCancelled, JobContext, JobError
from tenantry.core.jobs.enqueue import enqueue
from tenantry.core.jobs.registry import Schedule, get_handler, registered_schedules
from tenantry.core.jobs.session import open_job_session, unit_of_work
from tenantry.core.jobs.transport import JobTransport
from tenantry.core.routing import run_after_commit
from tenantry.modules.jobs.models import Job, JobStatus

log = logging.getLogger("tenantry.jobs")

Clock = Callable[[], dt.datetime]
Deliveries = AsyncIterator[tuple[uuid.UUID, Callable[[], Awaitable[None]]]]
SCHEDULE_LOOKBACK = dt.timedelta(minutes=10)
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


class Worker:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        transport: JobTransport | None = None,
        *,
        worker_id: str | None = None,
        clock: Clock = utcnow,
        schedules: Iterable[Schedule] | None = None,
        job_types: Collection[str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.transport = transport
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.schedules = registered_schedules() if schedules is None else list(schedules)
        self.job_types = None if job_types is None else frozenset(job_types)
        self.concurrency = concurrency or settings.jobs_concurrency
        self.lease = settings.jobs_lease_seconds
        self.poll = settings.jobs_poll_seconds
        self.report_interval = min(1.0, self.lease / 3)
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._releasing: set[uuid.UUID] = set()
        self._lost: set[uuid.UUID] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._fired: dict[str, str] = {}
        self._last_sweep = -math.inf
        self._stopping = False
        self._delivers = False
        if transport is not None:
            transport.add_listener(lambda _ids: self.wake())

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start claiming in the background (returns at once)."""
        deliveries = self.transport.deliveries() if self.transport is not None else None
        self._delivers = deliveries is not None
        self._loops.append(asyncio.create_task(self._poll_loop(), name="jobs-poll"))
        if deliveries is not None:
            self._loops.append(asyncio.create_task(self._consume(deliveries), name="jobs-consume"))
        log.info("job worker %s started (concurrency %d)", self.worker_id, self.concurrency)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming; let running jobs finish within `timeout`, release the rest."""
        self._stopping = True
        self.wake()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        wait = self.settings.jobs_shutdown_timeout if grace_seconds is None else grace_seconds
        running = dict(self._running)
        if not running:
            return
        _, pending = await asyncio.wait(running.values(), timeout=wait)
        for job_id, task in running.items():
            if task in pending:
                self._releasing.add(job_id)
                task.cancel()
        if pending:
            log.warning("releasing %d unfinished job(s) back to the queue", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._running)

    async def drain(self, *, within_seconds: float = 30.0) -> None:
        """Run due jobs until none is due or running (tests and one-shot use; no loops)."""
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline:
            await self.sweep(force=True)
            claimed = await self.fill()
            if not claimed and not self._running:
                return
            if self._running:
                await asyncio.wait(
                    list(self._running.values()),
                    timeout=max(deadline - time.monotonic(), 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        raise TimeoutError("jobs still running after the drain timeout")

    # -- claiming ----------------------------------------------------------------------

    async def fill(self) -> int:
        """Claim due rows up to the free concurrency (overdue ones only when Redis delivers)."""
        free = self.concurrency - len(self._running)
        if free <= 0 or self._stopping:
            return 0
        now = self.clock()
        grace = dt.timedelta(seconds=max(2 * self.poll, 1.0)) if self._delivers else None
        jobs = await store.claim_next(
            self.database,
            self.worker_id,
            now=now,
            lease=self.lease,
            limit=free,
            due_before=now - grace if grace else None,
            job_types=self.job_types,
        )
        for job in jobs:
            self._spawn(job)
        return len(jobs)

    async def sweep(self, *, force: bool = False) -> None:
        """Recover expired leases and fire due schedules (at most once per poll interval)."""
        moment = time.monotonic()
        if not force and moment - self._last_sweep < self.poll:
            return
        self._last_sweep = moment
        requeued = await store.recover_expired_leases(self.database, now=self.clock())
        if requeued:
            log.warning("requeued %d job(s) whose worker stopped responding", len(requeued))
            if self.transport is not None:
                await self.transport.notify(list(requeued))
        await self.fire_schedules()

    async def fire_schedules(self) -> list[Job]:
        """Enqueue each schedule's latest due firing, keyed `(schedule, fire time)`."""
        now = self.clock()
        created: list[Job] = []
        for entry in self.schedules:
            fire_time = entry.latest_fire_time(now, SCHEDULE_LOOKBACK)
            if fire_time is None:
                continue
            key = f"schedule:{entry.name}@{fire_time:%Y-%m-%dT%H:%MZ}"
            if self._fired.get(entry.name) == key:
                continue
            async with unit_of_work(self.database) as session:
                job = await enqueue(
                    session, entry.job_type, entry.payload, idempotency_key=key, run_at=now
                )
            self._fired[entry.name] = key
            created.append(job)
        return created

    async def _poll_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.sweep()
                await self.fill()
            except Exception:
                log.exception("job worker poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll)

    async def _consume(self, deliveries: Deliveries) -> None:
        while not self._stopping:
            try:
                async for job_id, ack in deliveries:
                    await ack()  # the table, not the stream, keeps the job from here on
                    await self._wait_for_slot()
                    if self._stopping:
                        return
                    job = await store.claim_by_id(
                        self.database, job_id, self.worker_id, now=self.clock(), lease=self.lease
                    )
                    if job is not None and (self.job_types is None or job.type in self.job_types):
                        self._spawn(job)
                    elif job is not None:
                        await store.release(self.database, job.id, job.attempts, now=self.clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job stream failed; reconnecting")
                await asyncio.sleep(min(self.poll, 1.0))
                if self.transport is not None:
                    fresh = self.transport.deliveries()
                    if fresh is not None:
                        deliveries = fresh

    async def _wait_for_slot(self) -> None:
        while len(self._running) >= self.concurrency and not self._stopping:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    # -- running -----------------------------------------------------------------------

    def _spawn(self, job: Job) -> None:
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self._running[job.id] = task
        task.add_done_callback(partial(self._done, job.id))

    def _done(self, job_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._releasing.discard(job_id)
        self._lost.discard(job_id)
        self._slot_freed.set()
        self._wake.set()

    async def _execute(self, job: Job) -> None:
        handler = get_handler(job.type)
        if handler is None:
            await self._failed(job, JobError(NO_HANDLER), retry_base=None)
            return
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
                result = _jsonable(await handler.func(ctx))
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
                await asyncio.shield(beat)
                await asyncio.shield(session.close())
        except JobCancelled:
            await store.mark_cancelled(self.database, job.id, job.attempts, now=self.clock())
            log.info("job %s (%s) cancelled while running", job.id, job.type)
        except asyncio.CancelledError:
            if job.id in self._releasing:
                await store.release(self.database, job.id, job.attempts, now=self.clock())
                log.info("job %s released to the queue (shutdown)", job.id)
            elif job.id in self._lost:
                log.warning("job %s stopped: its lease was taken over", job.id)
            raise
        except Exception as exc:
            await self._failed(job, exc, retry_base=handler.retry_base_seconds)
        if committed:
            await run_after_commit(session)

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
                self._lost.add(job.id)
                runner.cancel()
                return

    async def _write_progress(
        self, job: Job, session: AsyncSession, progress: int, message: str | None
    ) -> bool:
        if self.database.is_sqlite and session.in_transaction():
            return False  # the handler holds SQLite's write lock: our write would wait on it
        flag = await store.write_progress(self.database, job.id, job.attempts, progress, message)
        return bool(flag)


def _jsonable(result: Any) -> Any:
    """Handlers return JSON-able results; anything else fails the attempt clearly."""
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError) as exc:
        raise JobError("The job returned a result that is not JSON.", retry=False) from exc
