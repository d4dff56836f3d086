"""Handlers for tests that run real `tenantry worker` processes (`JOBS_IMPORT` names this).

Importing this module registers them in the test process too (for the type names).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis.asyncio import Redis

from tenantry.core.jobs import JobContext, job_handler

COUNT = "test.process.count"
SLOW = "test.process.slow"

_redis: Redis | None = None


def _client() -> Redis:
    global _redis
    if _redis is None:
        _redis = Redis.from_url(os.environ["REDIS_URL"])
    return _redis


@job_handler(COUNT, max_attempts=3)
async def count_run(ctx: JobContext) -> dict[str, Any]:
    """Count every execution per job id in a Redis hash (the test checks each ran once)."""
    await _client().hincrby(ctx.payload["counter"], str(ctx.job_id), 1)
    return {"pid": os.getpid()}


@job_handler(SLOW, max_attempts=5)
async def sleep_a_while(ctx: JobContext) -> dict[str, Any]:
    await ctx.report(10, f"attempt {ctx.attempt} in process {os.getpid()}")
    seconds = ctx.payload["seconds"]
    if ctx.attempt == 1:  # lets a crash test kill the first attempt, not wait on the second
        seconds = ctx.payload.get("first_attempt_seconds", seconds)
    await asyncio.sleep(float(seconds))
    return {"pid": os.getpid(), "attempt": ctx.attempt}
