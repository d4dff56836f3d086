"""Trial emails at 7 days left, 1 day left and on expiry — each queued once per owner."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tenantry.core.db import utcnow
from tenantry.core.jobs.models import Job
from tenantry.modules.plans.lifecycle import reminder_kind, run_trial_lifecycle
from tests.plans.conftest import end_trial_at
from tests.tenant_helpers import Org, Tenants


async def _trial_mails(tenants: Tenants, org: Org) -> list[str]:
    async with tenants.app.state.database.transaction() as session:
        keys = await session.scalars(
            select(Job.idempotency_key)
            .where(Job.type == "mail.send", Job.idempotency_key.like(f"trial:{org.id}:%"))
            .order_by(Job.created_at)
        )
        return [str(k).split(":")[2] for k in keys.all()]


async def _run_job_twice(tenants: Tenants) -> None:
    for _ in range(2):
        async with tenants.app.state.database.transaction() as session:
            await run_trial_lifecycle(session, utcnow())


async def test_each_trial_email_is_queued_once(tenants: Tenants) -> None:
    org = await tenants.org()
    await _run_job_twice(tenants)
    assert await _trial_mails(tenants, org) == []  # 30 days left: nothing yet

    await end_trial_at(tenants.app, org, utcnow() + dt.timedelta(days=6, hours=12))
    await _run_job_twice(tenants)
    assert await _trial_mails(tenants, org) == ["7d"]

    await end_trial_at(tenants.app, org, utcnow() + dt.timedelta(hours=20))
    await _run_job_twice(tenants)
    assert await _trial_mails(tenants, org) == ["7d", "1d"]

    await end_trial_at(tenants.app, org, utcnow() - dt.timedelta(minutes=5))
    await _run_job_twice(tenants)
    assert await _trial_mails(tenants, org) == ["7d", "1d", "expired"]


async def test_every_owner_gets_the_email_and_other_roles_do_not(tenants: Tenants) -> None:
    org = await tenants.org()
    await org.join("owner")
    await org.join("admin")
    await end_trial_at(tenants.app, org, utcnow() + dt.timedelta(days=3))
    await _run_job_twice(tenants)
    assert await _trial_mails(tenants, org) == ["7d", "7d"]


@pytest.mark.parametrize(
    ("left", "kind"),
    [
        (dt.timedelta(days=8), None),
        (dt.timedelta(days=7), 7),
        (dt.timedelta(days=1, seconds=1), 7),
        (dt.timedelta(days=1), 1),
        (dt.timedelta(minutes=1), 1),
        (dt.timedelta(0), None),
        (-dt.timedelta(days=1), None),
    ],
)
def test_reminder_kind_by_time_left(left: dt.timedelta, kind: int | None) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert reminder_kind(now + left, now) == kind
