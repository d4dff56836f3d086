"""Job states and progress on the event stream, while the job runs (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from tenantry.core.jobs import Worker
from tenantry.modules.exports import document
from tenantry.modules.exports.service import JOB_TYPE
from tests.events.sse import open_stream
from tests.factories import add_member, create_org, register


async def test_an_exports_progress_is_streamed_while_it_runs(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    viewer = await add_member(app, client, org, "viewer")  # jobs:read
    billing = await add_member(app, client, org, "billing")  # no jobs:read
    project = (
        await client.post(f"{org.path}/projects", json={"name": "big"}, headers=owner.headers)
    ).json()["data"]["id"]
    for i in range(12):
        created = await client.post(
            f"{org.path}/projects/{project}/tasks", json={"title": f"t{i}"}, headers=owner.headers
        )
        assert created.status_code == 201
    monkeypatch.setattr(document, "BATCH_SIZE", 2)  # many batches: many progress reports
    async with (
        open_stream(app, org.id, viewer.headers) as stream,
        open_stream(app, org.id, billing.headers) as not_for_billing,
    ):
        accepted = await client.post(f"{org.path}/exports", json={}, headers=owner.headers)
        assert accepted.status_code == 202
        job_id = accepted.json()["data"]["jobId"]
        [queued] = await stream.events(1)
        assert queued.event == "job.queued"
        assert queued.data == {
            "jobId": job_id,
            "type": JOB_TYPE,
            "status": "queued",
            "progress": 0,
            "message": None,
        }
        worker = Worker(app.state.database, app.state.settings, job_types={JOB_TYPE})
        worker.executor.report_interval = 0  # every report is written and announced
        await worker.drain(within_seconds=60)
        frames = await stream.quiet(1.0)
        assert await not_for_billing.quiet(0.2) == []
    names = [f.event for f in frames]
    assert names[-2:] == ["file.created", "job.succeeded"]  # the file committed with success
    frames = [f for f in frames if f.event and f.event.startswith("job.")]
    assert frames[0].event == "job.running"
    progress = [f.data["progress"] for f in frames if f.event == "job.progress"]
    assert progress == sorted(progress)
    intermediate = [p for p in progress if 0 < p < 100]
    assert len(intermediate) >= 3, progress
    assert frames[-1].data["progress"] == 100
    assert frames[-1].data["status"] == "succeeded"
    assert {f.data["jobId"] for f in frames} == {job_id}


async def test_a_cancelled_job_is_announced(app: FastAPI, client: httpx.AsyncClient) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        accepted = await client.post(f"{org.path}/exports", json={}, headers=owner.headers)
        job_id = accepted.json()["data"]["jobId"]
        cancelled = await client.post(f"{org.path}/jobs/{job_id}/cancel", headers=owner.headers)
        assert cancelled.status_code == 200
        frames = await stream.events(2)
        await asyncio.sleep(0)
    assert [(f.event, f.data["status"]) for f in frames] == [
        ("job.queued", "queued"),
        ("job.cancelled", "cancelled"),
    ]


async def test_a_running_jobs_progress_is_readable_while_it_runs(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """GET /jobs/{id} shows the last report while the job runs, on SQLite too (where the
    job's own transaction holds the write lock, so the row cannot be written meanwhile)."""
    import uuid

    from sqlalchemy import select

    from tenantry.core.jobs import JobContext, enqueue, job_handler
    from tenantry.core.jobs.registry import get_handler
    from tenantry.modules.orgs.models import Organization
    from tenantry.services import services_of

    job_type = "test.events.halfway"
    halfway, finish = asyncio.Event(), asyncio.Event()
    if get_handler(job_type) is None:

        @job_handler(job_type)
        async def halfway_job(ctx: JobContext) -> dict[str, str]:
            await ctx.session.scalar(select(Organization.id).limit(1))  # a transaction
            await ctx.report(50, "half way")
            halfway.set()
            await finish.wait()
            return {}

    owner = await register(client)
    org = await create_org(client, owner)
    async with app.state.database.transaction() as session:
        job = await enqueue(session, job_type, {}, organization_id=uuid.UUID(org.id))
        job_id = str(job.id)
    worker = Worker(app.state.database, app.state.settings, job_types={job_type})
    worker.executor.report_interval = 0
    runtime = services_of(app).jobs
    runtime.worker = worker  # as the embedded worker of `serve`
    try:
        draining = asyncio.create_task(worker.drain(within_seconds=30))
        await asyncio.wait_for(halfway.wait(), 10)
        seen = (await client.get(f"{org.path}/jobs/{job_id}", headers=owner.headers)).json()
        listed = (await client.get(f"{org.path}/jobs", headers=owner.headers)).json()
        finish.set()
        await draining
    finally:
        runtime.worker = None
        finish.set()
    assert (seen["data"]["status"], seen["data"]["progress"]) == ("running", 50)
    assert seen["data"]["message"] == "half way"
    assert listed["data"][0]["progress"] == 50
    done = (await client.get(f"{org.path}/jobs/{job_id}", headers=owner.headers)).json()
    assert (done["data"]["status"], done["data"]["progress"]) == ("succeeded", 100)


@pytest.mark.parametrize(
    ("attempts_left", "announced"),
    [(True, "queued"), (False, "failed")],
    ids=["requeued", "failed"],
)
async def test_a_job_recovered_from_a_vanished_worker_is_announced(
    app: FastAPI, client: httpx.AsyncClient, attempts_left: bool, announced: str
) -> None:
    """The lease sweep changes a job's state like a worker does: subscribers see it."""
    import datetime as dt
    import uuid

    from sqlalchemy import update

    from tenantry.core.db import utcnow
    from tenantry.core.jobs.models import Job, JobStatus

    owner = await register(client)
    org = await create_org(client, owner)
    async with open_stream(app, org.id, owner.headers) as stream:
        accepted = await client.post(f"{org.path}/exports", json={}, headers=owner.headers)
        job_id = accepted.json()["data"]["jobId"]
        [queued] = await stream.events(1)
        assert queued.event == "job.queued"
        async with app.state.database.transaction() as session:  # a worker took it and died
            await session.execute(
                update(Job)
                .where(Job.id == uuid.UUID(job_id))
                .values(
                    status=JobStatus.RUNNING,
                    claimed_by="vanished",
                    attempts=1 if attempts_left else Job.max_attempts,
                    lease_until=utcnow() - dt.timedelta(seconds=1),
                )
            )
        worker = Worker(app.state.database, app.state.settings, job_types={"none"})
        await worker.sweep(force=True)
        [recovered] = await stream.events(1)
    assert (recovered.event, recovered.data["jobId"], recovered.data["status"]) == (
        f"job.{announced}",
        job_id,
        announced,
    )
