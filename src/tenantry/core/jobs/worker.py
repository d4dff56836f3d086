"""The worker: claims jobs, runs their handlers under a lease, retries, sweeps, schedules.

One class for both transports. Embedded: a poll loop woken by in-process notifications.
Redis: ids arrive on the stream and are claimed by id; the poll loop still claims rows
overdue past `run_at` (lost or delayed messages, retries) and recovers expired leases,
so no job depends on a Redis message being delivered.

A started worker also heartbeats in `job_workers` and watches the other workers' beats
(`liveness.py`): the jobs of a worker that stopped beating (killed, frozen, cut off) are
requeued after `JOBS_WORKER_TIMEOUT_SECONDS` instead of waiting out their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from functools import partial

from tenantry.config import Settings
from tenantry.core.db import Database, utcnow
from tenantry.core.jobs import store
from tenantry.core.jobs.enqueue import enqueue
from tenantry.core.jobs.execution import JobExecutor
from tenantry.core.jobs.liveness import LivenessObserver
from tenantry.core.jobs.models import Job, JobStatus
from tenantry.core.jobs.registry import Schedule, registered_schedules
from tenantry.core.jobs.session import unit_of_work
from tenantry.core.jobs.transport import JobTransport

log = logging.getLogger("tenantry.jobs")

Clock = Callable[[], dt.datetime]
Deliveries = AsyncIterator[tuple[uuid.UUID, Callable[[], Awaitable[None]]]]
SCHEDULE_LOOKBACK = dt.timedelta(minutes=10)


class Worker:
    """Claims due jobs up to its concurrency and hands them to a `JobExecutor`."""

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
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.executor = JobExecutor(database, settings, clock)
        self._loops: list[asyncio.Task[None]] = []
        self._fired: dict[str, str] = {}
        self._last_sweep = -math.inf
        self._stopping = False
        self._delivers = False
        self.worker_timeout = settings.jobs_worker_timeout_seconds
        self.liveness = LivenessObserver(self.worker_timeout)
        self._liveness_task: asyncio.Task[None] | None = None
        self._registered = False
        if transport is not None:
            transport.add_listener(lambda _ids: self.wake())

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start claiming in the background (returns at once)."""
        deliveries = self.transport.deliveries() if self.transport is not None else None
        self._delivers = deliveries is not None
        self._liveness_task = asyncio.create_task(self._liveness_loop(), name="jobs-liveness")
        self._loops.append(asyncio.create_task(self._poll_loop(), name="jobs-poll"))
        if deliveries is not None:
            self._loops.append(asyncio.create_task(self._consume(deliveries), name="jobs-consume"))
        log.info("job worker %s started (concurrency %d)", self.worker_id, self.concurrency)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming; let running jobs finish within `timeout`, release the rest."""
        self._stopping = True
        self.wake()
        await _cancel_until_done(self._loops)
        self._loops.clear()
        wait = self.settings.jobs_shutdown_timeout if grace_seconds is None else grace_seconds
        running = dict(self._running)
        if running:
            _, pending = await asyncio.wait(running.values(), timeout=wait)
            for job_id, task in running.items():
                if task in pending:
                    self.executor.releasing.add(job_id)
                    task.cancel()
            if pending:
                log.warning("releasing %d unfinished job(s) back to the queue", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        # Beat until the last job is finished or released: others must not requeue it.
        if self._liveness_task is not None:
            await _cancel_until_done([self._liveness_task])
            self._liveness_task = None
        if self._registered:
            self._registered = False
            try:
                await store.forget_worker(self.database, self.worker_id)
            except Exception:
                log.exception("job worker %s could not unregister", self.worker_id)

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
        abandoned = await store.recover_expired_leases(self.database, now=self.clock())
        if abandoned:
            log.warning("recovered %d job(s) whose worker stopped responding", len(abandoned))
            await self._recovered(abandoned)
        await self.fire_schedules()

    async def _recovered(self, abandoned: list[store.Abandoned]) -> None:
        """Re-dispatch the requeued jobs, and announce every change on the event streams."""
        queued = [job.id for job in abandoned if job.status is JobStatus.QUEUED]
        if queued and self.transport is not None:
            await self.transport.notify(queued)
        for job in abandoned:
            await self.executor.announce(
                job.organization_id, job.id, job.type, job.status, job.progress, job.message
            )

    async def check_liveness(self) -> None:
        """Beat once, then requeue the jobs of workers seen silent for the whole timeout."""
        try:
            known = await store.beat_worker(self.database, self.worker_id, now=self.clock())
        except Exception:
            self.liveness.reset()  # we were not watching either: our view starts over
            log.exception("job worker %s heartbeat failed", self.worker_id)
            return
        if not known and self._registered:
            log.warning(
                "job worker %s was silent long enough to be declared dead; its running jobs "
                "were requeued (their results will be refused)",
                self.worker_id,
            )
        self._registered = True
        try:
            beats = await store.worker_beats(self.database)
            dead = self.liveness.observe(beats, me=self.worker_id[:100])
            abandoned = await store.reap_workers(self.database, dead, now=self.clock())
        except Exception:
            self.liveness.reset()
            log.exception("job worker liveness check failed")
            return
        if dead:
            log.warning(
                "worker(s) %s stopped heartbeating; requeued %d job(s)",
                ", ".join(sorted(dead)),
                len(abandoned),
            )
        if abandoned:
            await self._recovered(abandoned)
            self.wake()

    async def _liveness_loop(self) -> None:
        while True:
            try:
                await self.check_liveness()
            except Exception:  # e.g. Redis down for the notification: the poll finds them
                log.exception("job worker liveness round failed")
            await asyncio.sleep(self.worker_timeout / 5)

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
        task = asyncio.create_task(self.executor.run(job), name=f"job-{job.id}")
        self._running[job.id] = task
        task.add_done_callback(partial(self._done, job.id))

    def _done(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Bookkeeping failed (database unreachable?): the lease expires, the job returns.
            log.error("job %s could not be recorded", job_id, exc_info=task.exception())
        self._running.pop(job_id, None)
        self.executor.forget(job_id)
        self._slot_freed.set()
        self._wake.set()


async def _cancel_until_done(
    tasks: list[asyncio.Task[None]], *, interval: float = 0.5, attempts: int = 20
) -> None:
    """Cancel `tasks` and wait for them, cancelling again while any is still running.

    One cancellation is not always enough on Python 3.11: when it lands together with a
    timeout inside a library (redis-py's blocking XREADGROUP under taskiq's `listen`), it
    can surface as a TimeoutError that the library retries, and the task runs on forever.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(attempts):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=interval)
    if pending:
        log.error("%d job worker loop(s) did not stop after repeated cancellation", len(pending))
        return
    await asyncio.gather(*tasks, return_exceptions=True)  # collect outcomes: nothing unretrieved
