"""`Idempotency-Key` on create: the first answer is replayed, a different body is 409."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import select, update

from tenantry.core.idempotency import IdempotencyKey
from tenantry.core.tenancy import TenantContext, bind_tenant
from tests.tenant_helpers import Tenants


async def _count(tenants: Tenants, url: str, headers: dict[str, str]) -> int:
    total: int = (await tenants.client.get(url, headers=headers)).json()["meta"]["total"]
    return total


async def test_same_key_and_body_returns_the_first_response_once(tenants: Tenants) -> None:
    org = await tenants.org()
    headers = {**org.owner.headers, "Idempotency-Key": uuid.uuid4().hex}
    first = await tenants.client.post(org.url("/projects"), json={"name": "Once"}, headers=headers)
    again = await tenants.client.post(org.url("/projects"), json={"name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await _count(tenants, org.url("/projects"), org.owner.headers) == 1


async def test_same_key_with_another_body_is_409(tenants: Tenants) -> None:
    org = await tenants.org()
    headers = {**org.owner.headers, "Idempotency-Key": "order-42"}
    assert (
        await tenants.client.post(org.url("/projects"), json={"name": "A"}, headers=headers)
    ).status_code == 201
    other = await tenants.client.post(org.url("/projects"), json={"name": "B"}, headers=headers)
    assert other.status_code == 409
    assert await _count(tenants, org.url("/projects"), org.owner.headers) == 1


async def test_keys_are_per_organization(tenants: Tenants) -> None:
    one, two = await tenants.org(), await tenants.org()
    for org in (one, two):
        headers = {**org.owner.headers, "Idempotency-Key": "shared-key"}
        response = await tenants.client.post(
            org.url("/projects"), json={"name": "S"}, headers=headers
        )
        assert response.status_code == 201
        assert response.json()["data"]["organizationId"] == str(org.id)
        assert "idempotent-replayed" not in response.headers


async def test_keys_are_per_caller_not_shared_by_the_organizations_members(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    colleague = await org.join("manager")
    key = await org.key(["projects:write", "projects:read"])  # acts for the owner, own keys
    body, idempotency = {"name": "Shared"}, {"Idempotency-Key": "retry-7"}
    callers = {"owner": org.owner.headers, "colleague": colleague.headers, "key": key}
    projects = {}
    for name, headers in callers.items():
        response = await tenants.client.post(
            org.url("/projects"), json=body, headers={**headers, **idempotency}
        )
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
        projects[name] = response.json()["data"]["id"]
    assert len(set(projects.values())) == 3  # nobody got another caller's response
    replay = await tenants.client.post(
        org.url("/projects"), json=body, headers={**colleague.headers, **idempotency}
    )
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["data"]["id"] == projects["colleague"]
    assert await _count(tenants, org.url("/projects"), org.owner.headers) == 3


async def test_without_a_key_every_post_creates(tenants: Tenants) -> None:
    org = await tenants.org()
    for _ in range(2):
        await tenants.client.post(
            org.url("/projects"), json={"name": "N"}, headers=org.owner.headers
        )
    assert await _count(tenants, org.url("/projects"), org.owner.headers) == 2


async def test_a_failed_create_does_not_burn_the_key(tenants: Tenants) -> None:
    org = await tenants.org()
    headers = {**org.owner.headers, "Idempotency-Key": "retry-me"}
    bad = await tenants.client.post(org.url("/projects"), json={"name": ""}, headers=headers)
    assert bad.status_code == 400
    good = await tenants.client.post(org.url("/projects"), json={"name": "fixed"}, headers=headers)
    assert good.status_code == 201


async def test_a_key_older_than_24_hours_creates_again(tenants: Tenants) -> None:
    org = await tenants.org()
    headers = {**org.owner.headers, "Idempotency-Key": "old-key"}
    first = await tenants.client.post(org.url("/projects"), json={"name": "Old"}, headers=headers)
    async with tenants.app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org.id))
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old-key")
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25))
        )
    second = await tenants.client.post(org.url("/projects"), json={"name": "Old"}, headers=headers)
    assert second.status_code == 201
    assert second.json()["data"]["id"] != first.json()["data"]["id"]
    assert await _count(tenants, org.url("/projects"), org.owner.headers) == 2


async def test_a_new_key_sweeps_the_organizations_expired_keys(tenants: Tenants) -> None:
    org, other = await tenants.org(), await tenants.org()
    for owner_org in (org, other):
        headers = {**owner_org.owner.headers, "Idempotency-Key": "stale"}
        await tenants.client.post(owner_org.url("/projects"), json={"name": "S"}, headers=headers)
        async with tenants.app.state.database.transaction() as session:
            bind_tenant(session, TenantContext(organization_id=owner_org.id))
            await session.execute(
                update(IdempotencyKey).values(
                    created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
                )
            )
    headers = {**org.owner.headers, "Idempotency-Key": "fresh"}
    await tenants.client.post(org.url("/projects"), json={"name": "F"}, headers=headers)
    remaining = {}
    for owner_org in (org, other):
        async with tenants.app.state.database.transaction() as session:
            bind_tenant(session, TenantContext(organization_id=owner_org.id))
            keys = await session.scalars(select(IdempotencyKey.key))
            remaining[owner_org.id] = sorted(keys)
    assert remaining == {org.id: ["fresh"], other.id: ["stale"]}


async def test_a_malformed_key_is_400(tenants: Tenants) -> None:
    org = await tenants.org()
    headers = {**org.owner.headers, "Idempotency-Key": "x" * 256}
    response = await tenants.client.post(org.url("/projects"), json={"name": "K"}, headers=headers)
    assert response.status_code == 400


@pytest.mark.services
async def test_concurrent_first_uses_of_a_key_create_once(tenants: Tenants) -> None:
    org = await tenants.org()
    headers = {**org.owner.headers, "Idempotency-Key": uuid.uuid4().hex}
    responses = await asyncio.gather(
        *(
            tenants.client.post(org.url("/projects"), json={"name": "Race"}, headers=headers)
            for _ in range(3)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 201, [r.text for r in responses]
    assert set(statuses[1:]) <= {201, 409}
    created = {r.json()["data"]["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1  # any other 201 is the replay of the same project
    assert await _count(tenants, org.url("/projects"), org.owner.headers) == 1
