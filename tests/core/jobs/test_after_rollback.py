"""`after_rollback` callbacks outside requests: jobs and `unit_of_work` run them on failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tenantry.core.db import Database
from tenantry.core.jobs import JobContext, JobError, Worker, enqueue, unit_of_work
from tenantry.core.routing import after_commit, after_rollback
from tests.core.jobs.support import handler, load


def recorder(events: list[str], name: str) -> Callable[[], Any]:
    async def callback() -> None:
        events.append(name)

    return callback


async def test_unit_of_work_runs_after_rollback_only_when_it_fails(database: Database) -> None:
    events: list[str] = []
    async with unit_of_work(database) as session:
        after_commit(session, recorder(events, "committed"))
        after_rollback(session, recorder(events, "compensated"))
    assert events == ["committed"]

    async def abort() -> None:
        async with unit_of_work(database) as session:
            after_commit(session, recorder(events, "committed again"))
            after_rollback(session, recorder(events, "compensated"))
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await abort()
    assert events == ["committed", "compensated"]


async def test_a_failed_job_runs_its_after_rollback_callbacks_and_a_succeeded_one_not(
    make_worker: Callable[..., Worker],
) -> None:
    events: list[str] = []

    async def fails(ctx: JobContext) -> None:
        after_rollback(ctx.session, recorder(events, f"compensated {ctx.payload['n']}"))
        raise JobError("no", retry=False)

    async def succeeds(ctx: JobContext) -> dict[str, Any]:
        after_rollback(ctx.session, recorder(events, "must not run"))
        return {}

    failing, working = handler(fails), handler(succeeds)
    worker = make_worker(job_types={failing, working})
    async with unit_of_work(worker.database) as session:
        bad = await enqueue(session, failing, {"n": 1})
        good = await enqueue(session, working)
    await worker.drain()
    assert (await load(worker.database, bad.id)).status == "failed"
    assert (await load(worker.database, good.id)).status == "succeeded"
    assert events == ["compensated 1"]
