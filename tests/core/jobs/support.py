"""Helpers for job tests: unique job types, a controllable clock, reading rows back."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from tenantry.core.db import Database
from tenantry.core.jobs import HandlerFunc, job_handler
from tenantry.core.jobs.models import Job


def unique_type(prefix: str = "test") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def handler(
    func: HandlerFunc, *, max_attempts: int | None = None, retry_base_seconds: float | None = None
) -> str:
    """Register `func` under a fresh job type (tests never share a type) and return it."""
    job_type = unique_type()
    job_handler(job_type, max_attempts=max_attempts, retry_base_seconds=retry_base_seconds)(func)
    return job_type


class Clock:
    """A clock the test moves by hand (retries, leases and schedules without sleeping)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        # A second ahead of real time: jobs enqueued "now" are due at once.
        self.now = start or dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


async def load(database: Database, job_id: uuid.UUID) -> Job:
    async with database.session(write=False) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def count_of_type(database: Database, job_type: str) -> int:
    async with database.session(write=False) as session:
        return int(
            await session.scalar(select(func.count()).select_from(Job).where(Job.type == job_type))
            or 0
        )


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.02
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)
