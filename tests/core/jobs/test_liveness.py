"""Worker liveness: a worker that stops heartbeating loses its jobs at once, fenced.

The real-process version (SIGKILL, recovery time measured) is in test_worker_processes.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from tenantry.core.jobs import JobContext, Worker, enqueue, store, unit_of_work
from tenantry.core.jobs.liveness import LivenessObserver
from tenantry.core.jobs.models import JobWorker
from tests.core.jobs.support import handler, load, unique_type, wait_until

# A long lease, a short worker timeout: whatever is recovered here is recovered by liveness.
LIVENESS = {"jobs_lease_seconds": 60, "jobs_worker_timeout_seconds": 1, "jobs_poll_seconds": 0.1}


async def _registered(worker: Worker) -> set[str]:
    async with worker.database.session(write=False) as session:
        return set((await session.scalars(select(JobWorker.id))).all())


async def test_a_silent_workers_job_is_requeued_and_its_late_result_refused(
    make_worker: Callable[..., Worker],
) -> None:
    release_first = asyncio.Event()

    async def first_attempt_hangs(ctx: JobContext) -> dict[str, Any]:
        if ctx.attempt == 1:
            await release_first.wait()
        return {"attempt": ctx.attempt}

    job_type = handler(first_attempt_hangs)
    # `silent` registers and claims, then never beats again (a frozen or cut-off process
    # whose handler still runs); `rescuer` is a started worker watching the beats.
    silent = make_worker(settings=LIVENESS, job_types={job_type})
    rescuer = make_worker(settings=LIVENESS, job_types={job_type})
    await silent.check_liveness()
    async with unit_of_work(silent.database) as session:
        job = await enqueue(session, job_type)
    assert await silent.fill() == 1
    claimed = await load(silent.database, job.id)
    assert (claimed.status, claimed.attempts, claimed.claimed_by) == (
        "running",
        1,
        silent.worker_id,
    )
    started = time.monotonic()
    rescuer.start()

    async def rescued() -> bool:
        return (await load(rescuer.database, job.id)).status == "succeeded"

    await wait_until(rescued, within=10)
    took = time.monotonic() - started
    row = await load(rescuer.database, job.id)
    assert (row.attempts, row.result, row.claimed_by) == (2, {"attempt": 2}, rescuer.worker_id)
    assert took < 5, took  # timeout 1 s (+ a beat interval), far below the 60 s lease
    assert silent.worker_id not in await _registered(rescuer)
    # The silent worker's handler now returns: its success is refused by the
    # (id, running, attempts) fence and its transaction rolled back.
    release_first.set()
    await wait_until(lambda: _idle(silent), within=5)
    after = await load(rescuer.database, job.id)
    assert (after.status, after.attempts, after.result) == ("succeeded", 2, {"attempt": 2})
    async with silent.database.transaction() as session:
        assert not await store.mark_succeeded(session, job.id, 1, "late", now=silent.clock())


async def _idle(worker: Worker) -> bool:
    return worker.running_count == 0


async def test_a_beating_worker_keeps_a_job_that_runs_longer_than_the_timeout(
    make_worker: Callable[..., Worker],
) -> None:
    async def slow(ctx: JobContext) -> str:
        await asyncio.sleep(2.5)
        return "ok"

    job_type = handler(slow)
    owner = make_worker(settings=LIVENESS, job_types={job_type})
    # The watcher runs other job types only: the job is the owner's, whatever the timing.
    watcher = make_worker(settings=LIVENESS, job_types={unique_type("other")})
    watcher.start()
    async with unit_of_work(owner.database) as session:
        job = await enqueue(session, job_type)
    owner.start()

    async def done() -> bool:
        return (await load(owner.database, job.id)).status == "succeeded"

    await wait_until(done, within=15)
    row = await load(owner.database, job.id)
    assert (row.attempts, row.claimed_by) == (1, owner.worker_id)
    assert owner.worker_id in await _registered(owner)
    await owner.stop(grace_seconds=1)
    assert owner.worker_id not in await _registered(owner)  # a graceful stop unregisters


def test_an_observer_that_was_not_watching_starts_over() -> None:
    now = [0.0]
    observer = LivenessObserver(10, clock=lambda: now[0])
    assert observer.observe({"a": 1, "me": 5}, me="me") == {}
    for _ in range(5):  # `a` stands still for 10 s of continuous watching: dead
        now[0] += 2
        dead = observer.observe({"a": 1, "me": 6}, me="me")
    assert dead == {"a": 1}
    now[0] += 2
    assert observer.observe({"a": 2}, me="me") == {}  # it beat: alive again
    now[0] += 30  # our own view had a gap (outage, stalled loop): nothing carries over
    assert observer.observe({"a": 2}, me="me") == {}
    for _ in range(4):
        now[0] += 2
        assert observer.observe({"a": 2}, me="me") == {}
    now[0] += 2
    assert observer.observe({"a": 2}, me="me") == {"a": 2}
