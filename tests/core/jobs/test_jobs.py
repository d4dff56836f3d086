"""Jobs on the embedded path (and on PostgreSQL under make test-services): the rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from tenantry.config import SettingsError, load_settings
from tenantry.core.db import Database
from tenantry.core.errors import Conflict
from tenantry.core.events import Outgoing, bind_events
from tenantry.core.jobs import (
    EmbeddedTransport,
    JobContext,
    JobError,
    Schedule,
    Worker,
    backoff_seconds,
    bind_transport,
    cancel,
    enqueue,
    store,
    unit_of_work,
)
from tenantry.core.responses import Envelope, ok
from tenantry.core.routing import SessionDep, UnitOfWorkRoute
from tenantry.core.tenancy import tenant_of
from tenantry.services import services_of
from tests.conftest import client_for
from tests.core.jobs.support import Clock, count_of_type, handler, load, unique_type, wait_until


async def _succeed(ctx: JobContext) -> dict[str, Any]:
    return {"echo": ctx.payload.get("value"), "attempt": ctx.attempt}


# -- enqueue: commit, then dispatch --------------------------------------------------------

probe = APIRouter(prefix="/api/v1/jobs-probe", route_class=UnitOfWorkRoute)


@probe.post("/{job_type}", status_code=202)
async def enqueue_then_maybe_fail(
    job_type: str, session: SessionDep, fail: bool = False
) -> Envelope[dict[str, str]]:
    job = await enqueue(session, job_type, {"value": 1})
    if fail:
        raise Conflict("changed my mind")
    return ok({"jobId": str(job.id), "status": job.status})


@pytest.fixture
async def probe_app(build_app: Callable[..., Any]) -> FastAPI:
    app: FastAPI = await build_app(redis_url=None)
    app.include_router(probe)
    return app


async def test_job_enqueued_in_a_request_is_dispatched_only_after_the_commit(
    probe_app: FastAPI,
) -> None:
    notified: list[Sequence[uuid.UUID]] = []
    transport = services_of(probe_app).jobs.transport
    assert isinstance(transport, EmbeddedTransport)
    transport.add_listener(notified.append)
    job_type = unique_type()
    async with client_for(probe_app) as http:
        response = await http.post(f"/api/v1/jobs-probe/{job_type}")
    assert response.status_code == 202
    job_id = uuid.UUID(response.json()["data"]["jobId"])
    assert [list(ids) for ids in notified] == [[job_id]]
    job = await load(probe_app.state.database, job_id)
    assert (job.status, job.attempts, job.payload) == ("queued", 0, {"value": 1})


async def test_rolled_back_request_leaves_no_job_and_notifies_nobody(probe_app: FastAPI) -> None:
    notified: list[Sequence[uuid.UUID]] = []
    services_of(probe_app).jobs.transport.add_listener(notified.append)
    job_type = unique_type()
    async with client_for(probe_app) as http:
        response = await http.post(f"/api/v1/jobs-probe/{job_type}", params={"fail": "true"})
    assert response.status_code == 409
    assert notified == []
    assert await count_of_type(probe_app.state.database, job_type) == 0


async def test_unit_of_work_outside_requests_notifies_after_commit_not_before(
    database: Database,
) -> None:
    transport = EmbeddedTransport()
    notified: list[Sequence[uuid.UUID]] = []
    transport.add_listener(notified.append)
    bind_transport(database, transport)
    async with unit_of_work(database) as session:
        job = await enqueue(session, unique_type())
        assert notified == []
    assert notified == [[job.id]]
    lost_type = unique_type()

    async def enqueue_then_abort() -> None:
        async with unit_of_work(database) as session:
            await enqueue(session, lost_type)
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await enqueue_then_abort()
    assert len(notified) == 1
    assert await count_of_type(database, lost_type) == 0


async def test_the_queued_event_is_published_before_workers_are_told(database: Database) -> None:
    """A worker told of a job may run it and announce `job.running` at once: `job.queued`
    must be on the stream first, or a subscriber sees the job run before it was queued."""
    order: list[str] = []

    class Sink:
        async def publish(self, org_id: uuid.UUID, events: Sequence[Outgoing]) -> None:
            order.extend(event.name for event in events)

    transport = EmbeddedTransport()
    transport.add_listener(lambda ids: order.append("workers told"))
    bind_transport(database, transport)
    bind_events(database, Sink())
    async with unit_of_work(database) as session:
        await enqueue(session, unique_type(), organization_id=uuid.uuid4())
    assert order == ["job.queued", "workers told"]


async def test_same_idempotency_key_returns_the_same_job(database: Database) -> None:
    job_type = unique_type()
    async with unit_of_work(database) as session:
        first = await enqueue(session, job_type, {"n": 1}, idempotency_key="order-42")
    async with unit_of_work(database) as session:
        again = await enqueue(session, job_type, {"n": 2}, idempotency_key="order-42")
        other = await enqueue(session, job_type, {"n": 3}, idempotency_key="order-43")
    assert again.id == first.id
    assert again.payload == {"n": 1}
    assert other.id != first.id
    assert await count_of_type(database, job_type) == 2


async def test_enqueue_rejects_bad_arguments(database: Database) -> None:
    async with unit_of_work(database) as session:
        with pytest.raises(ValueError, match="job type"):
            await enqueue(session, "Not A Type")
        with pytest.raises(ValueError, match="timezone"):
            await enqueue(session, unique_type(), run_at=dt.datetime(2030, 1, 1))
        with pytest.raises(ValueError, match="idempotency_key"):
            await enqueue(session, unique_type(), idempotency_key="x" * 201)


# -- running, retries, failure -------------------------------------------------------------


async def test_worker_runs_a_job_and_keeps_its_result(make_worker: Callable[..., Worker]) -> None:
    job_type = handler(_succeed)
    worker = make_worker(job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type, {"value": "hi"})
    await worker.drain()
    done = await load(worker.database, job.id)
    assert done.status == "succeeded"
    assert done.result == {"echo": "hi", "attempt": 1}
    assert (done.attempts, done.progress, done.lease_until) == (1, 100, None)
    assert done.started_at is not None
    assert done.finished_at is not None


async def test_job_not_due_yet_waits_for_its_run_at(make_worker: Callable[..., Worker]) -> None:
    clock = Clock()
    job_type = handler(_succeed)
    worker = make_worker(job_types={job_type}, clock=clock)
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type, run_at=clock.now + dt.timedelta(minutes=5))
    await worker.drain()
    assert (await load(worker.database, job.id)).status == "queued"
    clock.advance(301)
    await worker.drain()
    assert (await load(worker.database, job.id)).status == "succeeded"


async def test_failures_back_off_exponentially_then_fail_without_internals(
    make_worker: Callable[..., Worker],
) -> None:
    async def always_broken(ctx: JobContext) -> None:
        raise RuntimeError("secret internals: password=hunter2")

    clock = Clock()
    job_type = handler(always_broken, max_attempts=3, retry_base_seconds=10)
    worker = make_worker(job_types={job_type}, clock=clock)
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    delays = []
    for _ in range(2):
        failed_at = clock.now
        await worker.drain()
        row = await load(worker.database, job.id)
        assert row.status == "queued"
        delays.append((row.run_at - failed_at).total_seconds())
        clock.now = row.run_at
    await worker.drain()
    row = await load(worker.database, job.id)
    assert 5 <= delays[0] <= 10  # base 10 s, equal jitter: [d/2, d]
    assert 10 <= delays[1] <= 20  # doubled
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.finished_at is not None
    assert row.error is not None
    assert "RuntimeError" in row.error
    assert "hunter2" not in row.error
    assert "Traceback" not in row.error


async def test_job_error_message_is_kept_and_can_stop_retries(
    make_worker: Callable[..., Worker],
) -> None:
    async def refuses(ctx: JobContext) -> None:
        raise JobError("The export is too large for your plan.", retry=False)

    job_type = handler(refuses, max_attempts=5)
    worker = make_worker(job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.drain()
    row = await load(worker.database, job.id)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error == "The export is too large for your plan."


async def test_flaky_job_succeeds_on_retry(make_worker: Callable[..., Worker]) -> None:
    async def flaky(ctx: JobContext) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("smtp down")
        return ctx.attempt

    clock = Clock()
    job_type = handler(flaky, retry_base_seconds=1)
    worker = make_worker(job_types={job_type}, clock=clock)
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.drain()
    clock.advance(2)
    await worker.drain()
    row = await load(worker.database, job.id)
    assert (row.status, row.attempts, row.result, row.error) == ("succeeded", 2, 2, None)


async def test_real_time_retry_happens_after_its_backoff(
    make_worker: Callable[..., Worker],
) -> None:
    ran_at: list[float] = []

    async def flaky(ctx: JobContext) -> None:
        ran_at.append(asyncio.get_running_loop().time())
        if ctx.attempt < 3:
            raise ConnectionError("try again")

    job_type = handler(flaky, retry_base_seconds=0.4)
    worker = make_worker(settings={"jobs_poll_seconds": 0.05}, job_types={job_type})
    worker.start()
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)

    async def finished() -> bool:
        return (await load(worker.database, job.id)).status == "succeeded"

    await wait_until(finished, within=5)
    gaps = [b - a for a, b in itertools.pairwise(ran_at)]
    assert len(ran_at) == 3
    assert 0.2 <= gaps[0] < 0.4 + 0.5  # [d/2, d] plus polling slack
    assert 0.4 <= gaps[1] < 0.8 + 0.5


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80)]:
        samples = [backoff_seconds(attempt, 10, 3600) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len({round(s, 3) for s in samples}) > 1  # jittered
    assert backoff_seconds(30, 10, 60) <= 60


async def test_non_json_result_fails_the_job_clearly(make_worker: Callable[..., Worker]) -> None:
    async def returns_object(ctx: JobContext) -> object:
        return object()

    job_type = handler(returns_object)
    worker = make_worker(job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.drain()
    row = await load(worker.database, job.id)
    assert (row.status, row.error) == ("failed", "The job returned a result that is not JSON.")


async def test_job_without_handler_is_retried_then_failed(
    make_worker: Callable[..., Worker],
) -> None:
    job_type = unique_type("unhandled")
    worker = make_worker(settings={"jobs_retry_base_seconds": 0}, job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type, max_attempts=2)
    await worker.drain()
    row = await load(worker.database, job.id)
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.error == "No handler is registered for this job type."


async def test_handler_session_commits_with_success_and_enqueues_follow_ups(
    make_worker: Callable[..., Worker],
) -> None:
    follow_up_type = handler(_succeed)

    async def parent(ctx: JobContext) -> str:
        child = await enqueue(ctx.session, follow_up_type, {"value": "from parent"})
        return str(child.id)

    job_type = handler(parent)
    worker = make_worker(job_types={job_type, follow_up_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.drain()
    row = await load(worker.database, job.id)
    child = await load(worker.database, uuid.UUID(row.result))
    assert row.status == "succeeded"
    assert (child.status, child.result) == ("succeeded", {"echo": "from parent", "attempt": 1})


async def test_failed_attempt_rolls_back_the_handlers_own_writes(
    make_worker: Callable[..., Worker],
) -> None:
    orphan_type = unique_type()

    async def writes_then_breaks(ctx: JobContext) -> None:
        await enqueue(ctx.session, orphan_type)
        raise JobError("nope", retry=False)

    job_type = handler(writes_then_breaks)
    worker = make_worker(job_types={job_type})
    async with unit_of_work(worker.database) as session:
        await enqueue(session, job_type)
    await worker.drain()
    assert await count_of_type(worker.database, orphan_type) == 0


# -- cancel and progress --------------------------------------------------------------------


async def test_cancelled_queued_job_never_runs(make_worker: Callable[..., Worker]) -> None:
    ran: list[int] = []

    async def record(ctx: JobContext) -> None:
        ran.append(1)

    job_type = handler(record)
    worker = make_worker(job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    async with unit_of_work(worker.database) as session:
        cancelled = await cancel(session, job.id)
    assert cancelled.status == "cancelled"
    await worker.drain()
    row = await load(worker.database, job.id)
    assert (row.status, row.attempts, ran) == ("cancelled", 0, [])
    async with unit_of_work(worker.database) as session:
        assert (await cancel(session, job.id)).status == "cancelled"  # idempotent


async def test_cancel_of_finished_or_unknown_job_is_refused(
    make_worker: Callable[..., Worker],
) -> None:
    from tenantry.core.errors import NotFound

    job_type = handler(_succeed)
    worker = make_worker(job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.drain()
    with pytest.raises(Conflict):
        async with unit_of_work(worker.database) as session:
            await cancel(session, job.id)
    with pytest.raises(NotFound):
        async with unit_of_work(worker.database) as session:
            await cancel(session, uuid.uuid4())


async def test_running_job_sees_cancel_at_its_next_report(
    make_worker: Callable[..., Worker],
) -> None:
    reports: list[int] = []

    async def long_loop(ctx: JobContext) -> None:
        for step in range(1, 400):
            reports.append(step)
            await ctx.report(step % 100, f"step {step}")
            await asyncio.sleep(0.02)

    job_type = handler(long_loop)
    worker = make_worker(settings={"jobs_lease_seconds": 0.6}, job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.fill()

    async def reported() -> bool:
        return (await load(worker.database, job.id)).progress > 0

    await wait_until(reported)
    async with unit_of_work(worker.database) as session:
        asked = await cancel(session, job.id)
    assert (asked.status, asked.cancel_requested) == ("running", True)
    steps_when_asked = len(reports)
    await wait_until(lambda: _status_is(worker.database, job.id, "cancelled"), within=3)
    assert len(reports) < 399  # stopped early
    assert len(reports) - steps_when_asked < 30  # within ~ one report interval


async def _status_is(database: Database, job_id: uuid.UUID, status: str) -> bool:
    return (await load(database, job_id)).status == status


async def test_progress_is_written_throttled_and_visible_while_running(
    make_worker: Callable[..., Worker],
) -> None:
    step = asyncio.Event()

    async def reporting(ctx: JobContext) -> str:
        await ctx.report(25, "quarter")
        await ctx.report(50, "half")  # within the throttle interval: not written
        await step.wait()
        await asyncio.sleep(0.25)
        await ctx.report(75, "three quarters")
        step.clear()
        await step.wait()
        return "done"

    job_type = handler(reporting)
    worker = make_worker(settings={"jobs_lease_seconds": 0.6}, job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.fill()

    async def progress_is(value: int) -> bool:
        return (await load(worker.database, job.id)).progress == value

    await wait_until(lambda: progress_is(25))
    await asyncio.sleep(0.05)
    row = await load(worker.database, job.id)
    assert (row.status, row.progress, row.message) == ("running", 25, "quarter")
    step.set()
    await wait_until(lambda: progress_is(75))
    assert (await load(worker.database, job.id)).message == "three quarters"
    step.set()
    await wait_until(lambda: _status_is(worker.database, job.id, "succeeded"))
    assert (await load(worker.database, job.id)).progress == 100


async def test_a_slow_progress_write_does_not_let_the_next_report_through() -> None:
    """The throttle interval starts when a write ends, not when it began."""
    writes: list[int] = []

    async def slow_write(progress: int, message: str | None) -> bool:
        writes.append(progress)
        await asyncio.sleep(0.15)  # longer than the interval, as on a loaded disk
        return False

    ctx = JobContext(
        job_id=uuid.uuid4(),
        job_type="t",
        organization_id=None,
        payload={},
        attempt=1,
        max_attempts=1,
        session=None,  # type: ignore[arg-type]  # never touched by report()
        _write_progress=slow_write,
        report_interval=0.1,
    )
    await ctx.report(25)
    await ctx.report(50)
    assert writes == [25]
    await ctx.report(100)  # completion always writes
    assert writes == [25, 100]


# -- leases -----------------------------------------------------------------------------------


async def test_expired_lease_returns_job_to_queue_and_old_worker_cannot_finish_it(
    make_worker: Callable[..., Worker],
) -> None:
    clock = Clock()
    job_type = handler(_succeed)
    rescuer = make_worker(job_types={job_type}, clock=clock, settings={"jobs_lease_seconds": 30})
    database = rescuer.database
    async with unit_of_work(database) as session:
        job = await enqueue(session, job_type)
    # A worker claims the job and then vanishes (no heartbeat).
    [claimed] = await store.claim_next(
        database, "vanished", now=clock.now, lease=30, limit=10, job_types={job_type}
    )
    assert (claimed.id, claimed.attempts, claimed.status) == (job.id, 1, "running")
    clock.advance(10)
    await rescuer.drain()
    assert (await load(database, job.id)).status == "running"  # lease still valid
    clock.advance(25)
    await rescuer.drain()
    row = await load(database, job.id)
    assert (row.status, row.attempts) == ("succeeded", 2)
    assert row.claimed_by == rescuer.worker_id
    async with database.transaction() as session:  # the vanished worker wakes up: fenced out
        assert not await store.mark_succeeded(session, job.id, 1, "late", now=clock.now)


async def test_heartbeat_keeps_a_long_job_leased(make_worker: Callable[..., Worker]) -> None:
    async def slow(ctx: JobContext) -> str:
        await asyncio.sleep(1.2)
        return "ok"

    job_type = handler(slow)
    worker = make_worker(settings={"jobs_lease_seconds": 0.5}, job_types={job_type})
    other = make_worker(settings={"jobs_lease_seconds": 0.5}, job_types={job_type})
    async with unit_of_work(worker.database) as session:
        job = await enqueue(session, job_type)
    await worker.fill()
    for _ in range(6):  # another worker sweeping meanwhile must not take it over
        await asyncio.sleep(0.2)
        await other.sweep(force=True)
    await wait_until(lambda: _status_is(worker.database, job.id, "succeeded"))
    assert (await load(worker.database, job.id)).attempts == 1


# -- schedules --------------------------------------------------------------------------------


async def test_schedule_fires_once_per_fire_time_across_two_workers(
    make_worker: Callable[..., Worker],
) -> None:
    job_type = handler(_succeed)
    every_five = Schedule(unique_type("every-five"), "*/5 * * * *", job_type, {"value": "tick"})
    clock = Clock(dt.datetime(2026, 11, 23, 3, 5, 30, tzinfo=dt.UTC))
    first = make_worker(schedules=[every_five], clock=clock, job_types={job_type})
    second = make_worker(schedules=[every_five], clock=clock, job_types={job_type})
    await asyncio.gather(first.fire_schedules(), second.fire_schedules())
    await asyncio.gather(first.sweep(force=True), second.sweep(force=True))
    assert await count_of_type(first.database, job_type) == 1
    clock.advance(120)  # 03:07:30: still the 03:05 firing
    await asyncio.gather(first.fire_schedules(), second.fire_schedules())
    assert await count_of_type(first.database, job_type) == 1
    clock.advance(180)  # 03:10:30: the next one
    fresh = make_worker(schedules=[every_five], clock=clock, job_types={job_type})  # restarted
    await asyncio.gather(first.fire_schedules(), second.fire_schedules(), fresh.fire_schedules())
    assert await count_of_type(first.database, job_type) == 2
    await first.drain()
    async with first.database.session(write=False) as session:
        from sqlalchemy import select

        from tenantry.core.jobs.models import Job

        rows = (await session.scalars(select(Job).where(Job.type == job_type))).all()
    assert sorted(r.idempotency_key or "" for r in rows) == [
        f"schedule:{every_five.name}@2026-11-23T03:05Z",
        f"schedule:{every_five.name}@2026-11-23T03:10Z",
    ]
    assert all(r.status == "succeeded" for r in rows)


def test_schedule_matches_cron_fields_and_rejects_bad_expressions() -> None:
    from tenantry.core.jobs import schedule

    daily = Schedule("daily", "0 3 * * *", "x")
    at = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    assert daily.latest_fire_time(at, dt.timedelta(hours=7)) == at.replace(hour=3)
    assert daily.latest_fire_time(at, dt.timedelta(hours=5)) is None
    with pytest.raises(ValueError, match="5 fields"):
        schedule(unique_type(), "* * * *", "x")
    with pytest.raises(ValueError, match="cron"):
        schedule(unique_type(), "61 * * * banana", "x")


# -- shutdown and the app ---------------------------------------------------------------------


async def test_graceful_shutdown_finishes_short_jobs_and_releases_long_ones(
    make_worker: Callable[..., Worker],
) -> None:
    never = asyncio.Event()

    async def short(ctx: JobContext) -> str:
        await asyncio.sleep(0.3)
        return "finished"

    async def endless(ctx: JobContext) -> None:
        await never.wait()

    short_type, endless_type = handler(short), handler(endless)
    worker = make_worker(job_types={short_type, endless_type}, concurrency=4)
    async with unit_of_work(worker.database) as session:
        quick = await enqueue(session, short_type)
        stuck = await enqueue(session, endless_type)
    worker.start()

    async def both_running() -> bool:
        return worker.running_count == 2

    await wait_until(both_running)
    stopping = asyncio.create_task(worker.stop(grace_seconds=1.0))
    await asyncio.sleep(0)  # the stop has begun: no more claims
    async with unit_of_work(worker.database) as session:
        late = await enqueue(session, short_type)
    await stopping
    quick_row = await load(worker.database, quick.id)
    stuck_row = await load(worker.database, stuck.id)
    late_row = await load(worker.database, late.id)
    assert (quick_row.status, quick_row.result) == ("succeeded", "finished")
    assert (stuck_row.status, stuck_row.attempts, stuck_row.lease_until) == ("queued", 0, None)
    assert (late_row.status, late_row.attempts) == ("queued", 0)  # not claimed once stopping
    assert worker.running_count == 0
    async with unit_of_work(worker.database) as session:
        await cancel(session, stuck.id)
        await cancel(session, late.id)


async def test_embedded_worker_in_the_app_runs_jobs_enqueued_by_requests(
    build_app: Callable[..., Any],
) -> None:
    job_type = handler(_succeed)
    app: FastAPI = await build_app(jobs_embedded_worker=True, jobs_poll_seconds=0.05)
    worker = services_of(app).jobs.worker
    assert worker is not None
    # The suite's database holds jobs earlier tests queued and never ran (hundreds after
    # the isolation walker, exports among them): claimed oldest first, they would queue
    # ahead of this one. This worker takes only the probe's type.
    worker.job_types = frozenset({job_type})
    app.include_router(probe)
    async with client_for(app) as http:
        response = await http.post(f"/api/v1/jobs-probe/{job_type}")
    job_id = uuid.UUID(response.json()["data"]["jobId"])
    # A bound on waiting (the worker polls every 50 ms), not a latency claim: generous for a
    # loaded 2-core CI machine.
    await wait_until(lambda: _status_is(app.state.database, job_id, "succeeded"), within=15)


async def test_app_without_embedded_worker_starts_none(build_app: Callable[..., Any]) -> None:
    app: FastAPI = await build_app(jobs_embedded_worker=False)
    assert services_of(app).jobs.worker is None
    async with client_for(app) as http:
        assert (await http.get("/health/live")).status_code == 200


def test_job_settings_are_validated() -> None:
    with pytest.raises(SettingsError, match="JOBS_CONCURRENCY"):
        load_settings(_env_file=None, jobs_concurrency=0)
    with pytest.raises(SettingsError, match="JOBS_LEASE_SECONDS"):
        load_settings(_env_file=None, jobs_lease_seconds=0)
    assert load_settings(_env_file=None, redis_url=None).runs_embedded_worker
    assert not load_settings(_env_file=None, redis_url="redis://x:6379/0").runs_embedded_worker
    settings = load_settings(_env_file=None, jobs_import="a.b, c.d")
    assert settings.jobs_import == ["a.b", "c.d"]


_ = httpx  # the ASGI client type used through client_for


@pytest.mark.parametrize(
    "cron", ["*/5 * * * *", "0 3 * * *", "15,45 8-18 * * mon-fri", "0 0 1 1-12/3 0"]
)
def test_valid_cron_expressions_are_accepted(cron: str) -> None:
    from tenantry.core.jobs import schedule
    from tenantry.core.jobs.registry import unregister_schedule

    name = unique_type()
    assert schedule(name, cron, "x").cron == cron
    unregister_schedule(name)


async def test_redis_down_still_commits_the_job_for_workers_to_find(
    build_app: Callable[..., Any],
) -> None:
    app: FastAPI = await build_app(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    app.include_router(probe)
    job_type = unique_type()
    async with client_for(app) as http:
        response = await http.post(f"/api/v1/jobs-probe/{job_type}")
    assert response.status_code == 202
    job = await load(app.state.database, uuid.UUID(response.json()["data"]["jobId"]))
    assert job.status == "queued"  # the table has it; a worker's poll will claim it
    async with unit_of_work(app.state.database) as session:
        await cancel(session, job.id)


async def test_each_job_gets_a_fresh_session_bound_to_its_own_organization(
    make_worker: Callable[..., Worker],
) -> None:
    seen: list[tuple[int, Any, Any, bool]] = []

    async def inspect(ctx: JobContext) -> None:
        info = ctx.session.info
        tenant = tenant_of(ctx.session)
        bound = tenant.organization_id if tenant is not None else None
        seen.append((id(ctx.session), ctx.organization_id, bound, "mark" in info))
        info["mark"] = True  # must not leak into the next job's session

    job_type = handler(inspect)
    worker = make_worker(job_types={job_type}, concurrency=1)
    first_org, second_org = uuid.uuid4(), uuid.uuid4()
    async with unit_of_work(worker.database) as session:
        await enqueue(session, job_type, organization_id=first_org)
    async with unit_of_work(worker.database) as session:
        await enqueue(session, job_type, organization_id=second_org)
        await enqueue(session, job_type)
    await worker.drain()
    assert [(org, bound, marked) for _, org, bound, marked in seen] == [
        (first_org, first_org, False),
        (second_org, second_org, False),
        (None, None, False),
    ]
