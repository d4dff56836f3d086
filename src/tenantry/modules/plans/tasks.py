"""Scheduled work of the plans: expire past-due trials (daily), trial emails, usage flush."""

from __future__ import annotations

from typing import Any

from tenantry.core.db import utcnow
from tenantry.core.jobs import JobContext, job_handler, schedule
from tenantry.modules.plans import lifecycle, usage

EXPIRE_TRIALS = "plans.expire_trials"
FLUSH_USAGE = "plans.flush_usage"

schedule(EXPIRE_TRIALS, "5 0 * * *", EXPIRE_TRIALS)  # daily, 00:05 UTC
schedule(FLUSH_USAGE, "*/5 * * * *", FLUSH_USAGE)


@job_handler(EXPIRE_TRIALS, max_attempts=5)
async def expire_trials(ctx: JobContext) -> dict[str, Any]:
    """Expire past-due trials and send the 7-day, 1-day and expiry emails (each once)."""
    return await lifecycle.run_trial_lifecycle(ctx.session, utcnow())


@job_handler(FLUSH_USAGE, max_attempts=3)
async def flush_usage(ctx: JobContext) -> dict[str, Any]:
    return {"flushed": await usage.flush(ctx.session)}
