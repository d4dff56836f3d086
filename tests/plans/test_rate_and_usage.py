"""Per-organization API rate limit (fairness between tenants) and daily usage counters."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from tenantry.core.db import utcnow
from tenantry.modules.plans import usage
from tenantry.modules.users.models import PlatformRole
from tests.conftest import RUN_ID, client_for
from tests.factories import create_account
from tests.plans.conftest import set_subscription
from tests.tenant_helpers import Tenants


async def test_a_tenant_over_its_quota_gets_429_while_another_gets_none(
    build_app: Callable[..., Any],
) -> None:
    # A key prefix of its own: the per-IP registration limit (5 a minute) must not count
    # the registrations other tests' apps made from the same test client address.
    app = await build_app(
        rate_limit_enabled=True, redis_key_prefix=f"tenantry-test-{RUN_ID}:{uuid.uuid4().hex}:"
    )
    async with client_for(app) as http:
        tenants = Tenants(app, http)
        flooding, quiet = await tenants.org(), await tenants.org()
        admin = await create_account(app, http, role=PlatformRole.ADMIN)
        await set_subscription(
            tenants,
            admin,
            flooding,
            plan="pro",
            status="active",
            overrides={"limits": {"apiRequestsPerMinute": 5}},
        )
        a_codes, b_codes = [], []
        for _ in range(12):
            a = await http.get(flooding.url("/projects"), headers=flooding.owner.headers)
            b = await http.get(quiet.url("/projects"), headers=quiet.owner.headers)
            a_codes.append(a.status_code)
            b_codes.append(b.status_code)
        assert a_codes == [200] * 5 + [429] * 7
        assert b_codes == [200] * 12
        limited = await http.get(flooding.url("/projects"), headers=flooding.owner.headers)
        assert limited.json()["code"] == "rate_limited"
        assert "retry-after" in limited.headers


async def test_usage_counts_requests_active_users_and_records_and_survives_a_flush(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    member = await org.join("manager")
    await org.project()
    await org.project(as_=member)
    for _ in range(3):
        await tenants.client.get(org.url("/projects"), headers=member.headers)
    today = utcnow().date().isoformat()
    url = org.url(f"/usage?from={today}&to={today}")

    async def day() -> dict[str, Any]:
        response = await tenants.client.get(url, headers=org.owner.headers)
        assert response.status_code == 200, response.text
        [only] = response.json()["data"]
        assert only["day"] == today
        data: dict[str, Any] = only
        return data

    before = await day()
    assert before["requests"] >= 5  # two creations, three lists (and the usage reads)
    assert before["activeUsers"] == 2
    assert before["recordsCreated"] >= 2
    async with tenants.app.state.database.session() as session:
        assert await usage.flush(session) >= 1
        await session.commit()
    after = await day()
    assert after["requests"] == before["requests"] + 1  # the first usage read itself
    assert after["activeUsers"] == 2
    assert after["recordsCreated"] == before["recordsCreated"]


async def test_usage_lists_every_day_of_the_period_and_rejects_bad_ranges(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    start = (utcnow() - dt.timedelta(days=2)).date()
    response = await tenants.client.get(
        org.url(f"/usage?from={start.isoformat()}&to={utcnow().date().isoformat()}"),
        headers=org.owner.headers,
    )
    assert [d["day"] for d in response.json()["data"]] == [
        (start + dt.timedelta(days=i)).isoformat() for i in range(3)
    ]
    for query in ("from=2026-02-01&to=2026-01-01", "from=2020-01-01&to=2026-01-01", "from=x"):
        bad = await tenants.client.get(org.url(f"/usage?{query}"), headers=org.owner.headers)
        assert bad.status_code == 400, query
    member = await org.join("member")
    assert (await tenants.client.get(org.url("/usage"), headers=member.headers)).status_code == 403
