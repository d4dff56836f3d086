"""Platform administration: subscriptions (audit-logged), suspension, lists, statistics;
403 for everyone who is not a platform admin."""

from __future__ import annotations

import datetime as dt

import pytest

from tenantry.core.db import utcnow
from tenantry.modules.plans.lifecycle import run_trial_lifecycle
from tenantry.modules.users.models import PlatformRole
from tests.factories import Account, create_account
from tests.plans.conftest import end_trial_at, set_subscription
from tests.tenant_helpers import Tenants

ADMIN_CALLS = [
    ("GET", "/api/v1/admin/orgs", None),
    ("GET", "/api/v1/admin/stats", None),
    ("PUT", "/api/v1/admin/orgs/{org}/subscription", {"plan": "pro", "status": "active"}),
    ("POST", "/api/v1/admin/orgs/{org}/suspend", None),
    ("POST", "/api/v1/admin/orgs/{org}/unsuspend", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_admin_routes_are_403_for_everyone_else(
    tenants: Tenants, method: str, path: str, body: dict[str, str] | None
) -> None:
    org = await tenants.org()
    url = path.format(org=org.id)
    plain = await create_account(tenants.app, tenants.client, role=PlatformRole.USER)
    for who in (org.owner, plain):
        response = await tenants.client.request(method, url, json=body, headers=who.headers)
        assert response.status_code == 403, (who.email, response.text)
    assert (await tenants.client.request(method, url, json=body)).status_code == 401
    sub = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    assert sub.json()["data"]["plan"] == "trial"  # nothing changed


async def test_set_subscription_is_audit_logged_and_applies_on_the_next_request(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    before = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    assert before.json()["data"]["plan"] == "trial"  # now cached with the membership
    data = await set_subscription(
        tenants,
        admin,
        org,
        plan="enterprise",
        status="active",
        overrides={"limits": {"members": 500}},
    )
    assert (data["plan"], data["status"]) == ("enterprise", "active")
    assert data["convertedAt"] is not None
    after = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    body = after.json()["data"]
    assert (body["plan"], body["status"]) == ("enterprise", "active")
    assert body["limits"]["members"] == 500
    assert body["limits"]["projects"] is None
    logs = await tenants.client.get(
        org.url("/audit-logs"),
        params={"action": "organization.subscription_changed"},
        headers=org.owner.headers,
    )
    assert logs.status_code == 200, logs.text
    [entry] = logs.json()["data"]
    assert entry["actorUserId"] == admin.id
    assert entry["changes"]["plan"] == ["trial", "enterprise"]


@pytest.mark.parametrize(
    "body",
    [
        {"plan": "gold", "status": "active"},
        {"plan": "pro", "status": "paused"},
        {"plan": "pro", "status": "active", "overrides": {"limits": {"seats": 3}}},
        {"plan": "pro", "status": "active", "overrides": {"limits": {"members": -1}}},
        {"plan": "pro", "status": "active", "overrides": {"features": {"apiKeys": "yes"}}},
        {"plan": "pro", "status": "active", "trialEndsAt": "2030-01-01T00:00:00"},
        {"plan": "pro", "status": "active", "extra": 1},
    ],
)
async def test_bad_subscription_bodies_are_400_and_change_nothing(
    tenants: Tenants, admin: Account, body: dict[str, object]
) -> None:
    org = await tenants.org()
    response = await tenants.client.put(
        f"/api/v1/admin/orgs/{org.id}/subscription", json=body, headers=admin.headers
    )
    assert response.status_code == 400, response.text
    sub = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    assert sub.json()["data"]["plan"] == "trial"


async def test_unknown_organization_is_404(tenants: Tenants, admin: Account) -> None:
    response = await tenants.client.put(
        "/api/v1/admin/orgs/00000000-0000-0000-0000-000000000000/subscription",
        json={"plan": "pro", "status": "active"},
        headers=admin.headers,
    )
    assert response.status_code == 404


async def test_suspended_organization_is_403_for_its_members_and_keeps_its_data(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    project = await org.project(name="kept")
    member = await org.join("member")
    suspended = await tenants.client.post(
        f"/api/v1/admin/orgs/{org.id}/suspend", headers=admin.headers
    )
    assert suspended.status_code == 200
    assert suspended.json()["data"]["suspendedAt"] is not None
    for who in (org.owner, member):
        response = await tenants.client.get(org.url("/projects"), headers=who.headers)
        assert response.status_code == 403
        assert response.json()["code"] == "organization_suspended"
    listed = await tenants.client.get(
        "/api/v1/admin/orgs", params={"suspended": "true", "limit": 100}, headers=admin.headers
    )
    assert str(org.id) in {o["id"] for o in listed.json()["data"]}
    await tenants.client.post(f"/api/v1/admin/orgs/{org.id}/unsuspend", headers=admin.headers)
    response = await tenants.client.get(org.url("/projects"), headers=member.headers)
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["data"]] == [project["id"]]


async def test_admin_list_shows_plan_status_members_and_filters(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    await org.join("member")
    await set_subscription(tenants, admin, org, plan="free", status="active")
    response = await tenants.client.get(
        "/api/v1/admin/orgs",
        params={"plan": "free", "status": "active", "search": org.org.name},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    [row] = response.json()["data"]
    assert row["id"] == str(org.id)
    assert (row["plan"], row["status"], row["members"], row["storageBytes"]) == (
        "free",
        "active",
        2,
        0,
    )
    none = await tenants.client.get(
        "/api/v1/admin/orgs",
        params={"plan": "pro", "search": org.org.name},
        headers=admin.headers,
    )
    assert none.json()["data"] == []
    bad = await tenants.client.get(
        "/api/v1/admin/orgs", params={"plan": "gold"}, headers=admin.headers
    )
    assert bad.status_code == 400


async def test_stats_count_trials_conversions_and_expiries_in_the_period(
    tenants: Tenants, admin: Account
) -> None:
    async def figures() -> dict[str, float]:
        response = await tenants.client.get("/api/v1/admin/stats", headers=admin.headers)
        assert response.status_code == 200, response.text
        data: dict[str, float] = response.json()["data"]
        return data

    start = await figures()
    converting, expiring = await tenants.org(), await tenants.org()
    await set_subscription(tenants, admin, converting, plan="pro", status="active")
    await end_trial_at(tenants.app, expiring, utcnow() - dt.timedelta(minutes=1))
    async with tenants.app.state.database.transaction() as session:
        await run_trial_lifecycle(session, utcnow())
    end = await figures()
    assert end["trialsStarted"] - start["trialsStarted"] == 2
    assert end["converted"] - start["converted"] == 1
    assert end["expired"] - start["expired"] >= 1
    assert end["paying"] - start["paying"] == 1
    assert 0 < end["conversionRate"] <= 1
    old = await tenants.client.get(
        "/api/v1/admin/stats",
        params={"from": "2001-01-01", "to": "2001-12-31"},
        headers=admin.headers,
    )
    assert old.json()["data"]["trialsStarted"] == 0
    assert old.json()["data"]["conversionRate"] is None
    backwards = await tenants.client.get(
        "/api/v1/admin/stats",
        params={"from": "2002-01-01", "to": "2001-12-31"},
        headers=admin.headers,
    )
    assert backwards.status_code == 400
