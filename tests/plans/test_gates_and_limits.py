"""Feature gates (402 `feature_not_in_plan`) and limits (402 `plan_limit_reached` with
{limit, used}) as dependencies; the PostgreSQL race at limit - 1."""

from __future__ import annotations

import asyncio

import pytest

from tests.factories import Account
from tests.plans.conftest import set_subscription
from tests.tenant_helpers import Tenants

PNG = b"\x89PNG\r\n\x1a\n" + b"plans" * 40


@pytest.mark.parametrize(
    ("feature", "path"), [("apiKeys", "/api-keys"), ("auditLog", "/audit-logs")]
)
async def test_a_feature_outside_the_plan_is_402_and_an_override_grants_it(
    tenants: Tenants, admin: Account, feature: str, path: str
) -> None:
    org = await tenants.org()
    assert (await tenants.client.get(org.url(path), headers=org.owner.headers)).status_code == 200
    await set_subscription(tenants, admin, org, plan="free", status="active")
    refused = await tenants.client.get(org.url(path), headers=org.owner.headers)
    assert refused.status_code == 402
    assert refused.json()["code"] == "feature_not_in_plan"
    assert refused.json()["details"] == {"feature": feature, "plan": "free"}
    await set_subscription(
        tenants, admin, org, plan="free", status="active", overrides={"features": {feature: True}}
    )
    assert (await tenants.client.get(org.url(path), headers=org.owner.headers)).status_code == 200


async def test_creating_an_api_key_on_free_is_402_and_creates_nothing(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    await set_subscription(tenants, admin, org, plan="free", status="active")
    response = await tenants.client.post(
        org.url("/api-keys"),
        json={"name": "k", "permissions": ["org:read"]},
        headers=org.owner.headers,
    )
    assert response.status_code == 402
    await set_subscription(tenants, admin, org, plan="pro", status="active")
    listed = await tenants.client.get(org.url("/api-keys"), headers=org.owner.headers)
    assert listed.json()["data"] == []


async def test_file_storage_gate(tenants: Tenants, admin: Account) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants,
        admin,
        org,
        plan="pro",
        status="active",
        overrides={"features": {"fileStorage": False}},
    )
    response = await tenants.client.post(
        org.url("/files"), files={"file": ("a.png", PNG, "image/png")}, headers=org.owner.headers
    )
    assert response.status_code == 402
    assert response.json()["code"] == "feature_not_in_plan"


async def test_projects_limit_is_402_with_limit_and_used(tenants: Tenants, admin: Account) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants, admin, org, plan="pro", status="active", overrides={"limits": {"projects": 2}}
    )
    await org.project()
    await org.project()
    response = await tenants.client.post(
        org.url("/projects"), json={"name": "third"}, headers=org.owner.headers
    )
    assert response.status_code == 402
    body = response.json()
    assert body["code"] == "plan_limit_reached"
    assert body["details"]["limit"] == 2
    assert body["details"]["used"] == 2
    listed = await tenants.client.get(org.url("/projects"), headers=org.owner.headers)
    assert len(listed.json()["data"]) == 2


async def test_a_deleted_project_frees_its_place(tenants: Tenants, admin: Account) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants, admin, org, plan="pro", status="active", overrides={"limits": {"projects": 1}}
    )
    project = await org.project()
    await tenants.client.delete(org.url(f"/projects/{project['id']}"), headers=org.owner.headers)
    await org.project()


async def test_storage_limit_refuses_the_upload_that_would_exceed_it(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants,
        admin,
        org,
        plan="pro",
        status="active",
        overrides={"limits": {"storageBytes": len(PNG) + 10}},
    )
    first = await tenants.client.post(
        org.url("/files"), files={"file": ("a.png", PNG, "image/png")}, headers=org.owner.headers
    )
    assert first.status_code == 201, first.text
    second = await tenants.client.post(
        org.url("/files"), files={"file": ("b.png", PNG, "image/png")}, headers=org.owner.headers
    )
    assert second.status_code == 402
    assert second.json()["details"]["limit"] == len(PNG) + 10
    assert second.json()["details"]["used"] == 2 * len(PNG)
    files = await tenants.client.get(org.url("/files"), headers=org.owner.headers)
    assert [f["filename"] for f in files.json()["data"]] == ["a.png"]
    sub = await tenants.client.get(org.url("/subscription"), headers=org.owner.headers)
    assert sub.json()["data"]["usage"]["storageBytes"] == len(PNG)


@pytest.mark.services
async def test_twenty_concurrent_creates_at_limit_minus_one_exactly_one_succeeds(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants, admin, org, plan="pro", status="active", overrides={"limits": {"projects": 5}}
    )
    for _ in range(4):
        await org.project()
    responses = await asyncio.gather(
        *(
            tenants.client.post(
                org.url("/projects"), json={"name": f"racer {i}"}, headers=org.owner.headers
            )
            for i in range(20)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [402] * 19, codes
    listed = await tenants.client.get(org.url("/projects?limit=100"), headers=org.owner.headers)
    assert len(listed.json()["data"]) == 5
