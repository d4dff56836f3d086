"""Sessions outside requests: one per job attempt, and a unit of work for scripts and jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from tenantry.core.db import Database
from tenantry.core.jobs.models import Job
from tenantry.core.routing import run_after_commit, run_after_rollback
from tenantry.core.tenancy import TenantContext, bind_tenant


def open_job_session(database: Database, job: Job) -> AsyncSession:
    """The session a handler works in: fresh for every attempt, nothing shared with the last.

    The single place where a job's session is made, so the tenant context of
    `job.organization_id` is bound here (and only here) for the attempt.
    """
    session = database.session(write=True)
    session.info["after_commit"] = []
    session.info["job_id"] = job.id
    if job.organization_id is not None:
        context = TenantContext.system(job.organization_id, acting_user_id=job.created_by)
        bind_tenant(session, context)
    return session


@asynccontextmanager
async def unit_of_work(database: Database) -> AsyncIterator[AsyncSession]:
    """Like a request's unit of work: commit at the end, then run the after-commit callbacks
    (or, when it fails, roll back and run the after-rollback ones).

    For code outside requests (CLI commands, schedules, tests) that enqueues jobs.
    """
    session = database.session(write=True)
    session.info["after_commit"] = []
    try:
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        await session.close()
        await run_after_rollback(session)
        raise
    await session.close()
    await run_after_commit(session)
