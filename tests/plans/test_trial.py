"""The trial lifecycle with a controllable clock: expiry on access and by the daily job,
reads kept, writes 402, data intact, conversion to pro restores writes."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select

from tenantry.core.db import utcnow
from tenantry.modules.orgs.models import Organization
from tenantry.modules.plans.lifecycle import run_trial_lifecycle
from tests.factories import Account
from tests.plans.conftest import Clock, end_trial_at, set_subscription
from tests.tenant_helpers import Tenants


async def test_a_new_organization_is_trialing_on_the_trial_plan_for_30_days(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    response = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["plan"] == "trial"
    assert data["status"] == "trialing"
    assert data["daysLeft"] == 30
    ends = dt.datetime.fromisoformat(data["trialEndsAt"])
    assert dt.timedelta(days=29, hours=23) < ends - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    assert data["features"] == {
        "apiKeys": True,
        "auditLog": True,
        "exports": True,
        "fileStorage": True,
    }
    assert data["limits"]["projects"] == 20
    assert data["usage"] == {"members": 1, "projects": 0, "storageBytes": 0}


async def test_subscription_needs_billing_read(tenants: Tenants) -> None:
    org = await tenants.org()
    member = await org.join("member")
    response = await tenants.client.get(org.url("/subscription"), headers=member.headers)
    assert response.status_code == 403
    billing = await org.join("billing")
    response = await tenants.client.get(org.url("/subscription"), headers=billing.headers)
    assert response.status_code == 200


async def test_past_the_trial_end_reads_work_and_writes_are_402_without_the_job(
    tenants: Tenants, clock: Clock
) -> None:
    org = await tenants.org()
    project = await org.project(name="kept")
    clock.advance(days=30, minutes=1)  # the daily job has not run: the access check decides
    headers = org.owner.headers

    listed = await tenants.client.get(org.url("/projects"), headers=headers)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["data"]] == [project["id"]]
    assert (
        await tenants.client.get(org.url(f"/projects/{project['id']}"), headers=headers)
    ).status_code == 200

    created = await tenants.client.post(org.url("/projects"), json={"name": "new"}, headers=headers)
    assert created.status_code == 402
    body = created.json()
    assert body["code"] == "trial_expired"
    assert str(org.id) in body["details"]["upgrade"]
    renamed = await tenants.client.patch(
        org.url(f"/projects/{project['id']}"), json={"name": "changed"}, headers=headers
    )
    assert renamed.status_code == 402
    deleted = await tenants.client.delete(org.url(f"/projects/{project['id']}"), headers=headers)
    assert deleted.status_code == 402
    patched_org = await tenants.client.patch(org.url(), json={"name": "x"}, headers=headers)
    assert patched_org.status_code == 402

    still = await tenants.client.get(org.url(f"/projects/{project['id']}"), headers=headers)
    assert still.json()["data"]["name"] == "kept"
    sub = await tenants.client.get(org.url("/subscription"), headers=headers)
    assert sub.json()["data"]["status"] == "expired"
    assert sub.json()["data"]["daysLeft"] is None


async def test_members_can_still_export_after_the_trial_expired(
    tenants: Tenants, clock: Clock
) -> None:
    org = await tenants.org()
    await org.project(name="kept")
    clock.advance(days=30, minutes=1)
    blocked = await tenants.client.post(
        org.url("/projects"), json={"name": "new"}, headers=org.owner.headers
    )
    assert blocked.status_code == 402
    export = await tenants.client.post(org.url("/exports"), json={}, headers=org.owner.headers)
    assert export.status_code == 202, export.text
    assert export.json()["data"]["status"] == "queued"


async def test_exports_need_the_exports_feature(tenants: Tenants, admin: Account) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants, admin, org, plan="pro", status="active", overrides={"features": {"exports": False}}
    )
    response = await tenants.client.post(org.url("/exports"), json={}, headers=org.owner.headers)
    assert response.status_code == 402
    assert response.json()["code"] == "feature_not_in_plan"


async def test_the_daily_job_expires_and_conversion_to_pro_restores_writes(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    await org.project(name="before")
    await end_trial_at(tenants.app, org, utcnow() - dt.timedelta(minutes=1))
    async with tenants.app.state.database.transaction() as session:
        result = await run_trial_lifecycle(session, utcnow())
    assert result["expired"] >= 1
    async with tenants.app.state.database.transaction() as session:
        row = await session.scalar(select(Organization).where(Organization.id == org.id))
        assert row is not None
        assert row.subscription_status == "expired"
        assert row.expired_at is not None

    headers = org.owner.headers
    blocked = await tenants.client.post(org.url("/projects"), json={"name": "n"}, headers=headers)
    assert blocked.status_code == 402

    await set_subscription(tenants, admin, org, plan="pro", status="active")
    created = await tenants.client.post(org.url("/projects"), json={"name": "n"}, headers=headers)
    assert created.status_code == 201, created.text
    sub = (await tenants.client.get(org.url("/subscription"), headers=headers)).json()["data"]
    assert (sub["plan"], sub["status"], sub["usage"]["projects"]) == ("pro", "active", 2)


async def test_a_second_job_run_changes_nothing_more(tenants: Tenants) -> None:
    org = await tenants.org()
    await end_trial_at(tenants.app, org, utcnow() - dt.timedelta(minutes=1))
    later = utcnow()
    database = tenants.app.state.database
    async with database.transaction() as session:
        await run_trial_lifecycle(session, later)
    async with database.transaction() as session:
        first = await session.scalar(
            select(Organization.expired_at).where(Organization.id == uuid.UUID(str(org.id)))
        )
    async with database.transaction() as session:
        await run_trial_lifecycle(session, later + dt.timedelta(days=1))
    async with database.transaction() as session:
        second = await session.scalar(
            select(Organization.expired_at).where(Organization.id == org.id)
        )
    assert first is not None
    assert first == second
