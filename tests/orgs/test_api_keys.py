"""API keys: shown once, hashed, subset of the creator's permissions, expiry, revocation,
own organization only, header transport only, lastUsedAt throttled."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.api_keys.models import ApiKey
from tests.factories import add_member, api_key_headers, create_api_key, create_org, register


async def _key_row(app: FastAPI, org_id: str, key: str) -> ApiKey:
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=uuid.UUID(org_id)))
        row = await session.scalar(select(ApiKey).where(ApiKey.prefix == key[:12]))
        assert row is not None
        return row


async def test_key_is_shown_once_and_stored_only_as_a_hash(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:read"])
    assert key.startswith("tnt_")
    assert len(key) >= 4 + 43
    listed = await client.get(f"{org.path}/api-keys", headers=org.owner.headers)
    assert key not in listed.text
    assert "key" not in listed.json()["data"][0]
    row = await _key_row(app, org.id, key)
    assert key not in (row.key_hash, row.prefix)
    assert len(row.key_hash) == 64


async def test_key_works_by_bearer_and_x_api_key_but_never_a_query_parameter(
    client: httpx.AsyncClient,
) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:read"])
    members = f"{org.path}/members"
    assert (await client.get(members, headers=api_key_headers(key))).status_code == 200
    bearer = {"Authorization": f"Bearer {key}"}
    assert (await client.get(members, headers=bearer)).status_code == 200
    assert (await client.get(members, params={"api_key": key})).status_code == 401
    assert (await client.get(members, params={"apiKey": key})).status_code == 401


async def test_key_acts_only_with_its_permissions(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:read"])
    assert (
        await client.get(f"{org.path}/audit-logs", headers=api_key_headers(key))
    ).status_code == 403


async def test_key_cannot_exceed_its_creators_permissions(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    too_much = await client.post(
        f"{org.path}/api-keys",
        json={"name": "k", "permissions": ["org:delete"]},
        headers=admin.headers,
    )
    assert too_much.status_code == 403
    unknown = await client.post(
        f"{org.path}/api-keys",
        json={"name": "k", "permissions": ["projects:fly"]},
        headers=admin.headers,
    )
    assert unknown.status_code == 400
    fine = await create_api_key(client, org, ["audit:read"], by=admin)
    assert fine.startswith("tnt_")


async def test_key_loses_what_its_creator_loses(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    key = await create_api_key(client, org, ["audit:read"], by=admin)
    assert (
        await client.get(f"{org.path}/audit-logs", headers=api_key_headers(key))
    ).status_code == 200
    await client.patch(
        f"{org.path}/members/{admin.id}", json={"role": "viewer"}, headers=org.owner.headers
    )
    assert (
        await client.get(f"{org.path}/audit-logs", headers=api_key_headers(key))
    ).status_code == 403


async def test_revoked_key_is_401_from_the_next_request(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:read"])
    listed = await client.get(f"{org.path}/api-keys", headers=org.owner.headers)
    key_id = next(k["id"] for k in listed.json()["data"] if key.startswith(k["prefix"]))
    revoke = await client.delete(f"{org.path}/api-keys/{key_id}", headers=org.owner.headers)
    assert revoke.status_code == 204
    response = await client.get(f"{org.path}/members", headers=api_key_headers(key))
    assert response.status_code == 401


async def test_expired_key_is_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    key = await create_api_key(client, org, ["members:read"], expiresAt=soon)
    assert (
        await client.get(f"{org.path}/members", headers=api_key_headers(key))
    ).status_code == 200
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=uuid.UUID(org.id)))
        row = await session.scalar(select(ApiKey).where(ApiKey.prefix == key[:12]))
        assert row is not None
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    assert (
        await client.get(f"{org.path}/members", headers=api_key_headers(key))
    ).status_code == 401
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    response = await client.post(
        f"{org.path}/api-keys",
        json={"name": "k", "permissions": ["members:read"], "expiresAt": past},
        headers=org.owner.headers,
    )
    assert response.status_code == 400


async def test_key_on_another_organizations_path_is_404(client: httpx.AsyncClient) -> None:
    owner = await register(client)
    mine = await create_org(client, owner)
    other = await create_org(client, owner)  # same owner: the key still stays in its org
    key = await create_api_key(client, mine, ["members:read"])
    response = await client.get(f"{other.path}/members", headers=api_key_headers(key))
    missing = await client.get(f"/api/v1/orgs/{uuid.uuid4()}/members", headers=api_key_headers(key))
    assert response.status_code == missing.status_code == 404
    assert response.json()["message"] == missing.json()["message"]


async def test_malformed_key_is_401(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    response = await client.get(f"{org.path}/members", headers={"X-API-Key": "tnt_short"})
    assert response.status_code == 401


async def test_last_used_at_is_written_at_most_once_a_minute(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:read"])
    assert (await _key_row(app, org.id, key)).last_used_at is None
    assert (
        await client.get(f"{org.path}/members", headers=api_key_headers(key))
    ).status_code == 200
    first = (await _key_row(app, org.id, key)).last_used_at
    assert first is not None
    for _ in range(3):
        await client.get(f"{org.path}/members", headers=api_key_headers(key))
    assert (await _key_row(app, org.id, key)).last_used_at == first
    listed = await client.get(f"{org.path}/api-keys", headers=org.owner.headers)
    assert next(k for k in listed.json()["data"] if key.startswith(k["prefix"]))["lastUsedAt"]


async def test_key_acts_as_its_creator_and_is_named_in_the_audit_log(
    client: httpx.AsyncClient,
) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:invite", "audit:read"])
    invite = await client.post(
        f"{org.path}/invitations",
        json={"email": f"k-{uuid.uuid4().hex[:8]}@example.com", "role": "viewer"},
        headers=api_key_headers(key),
    )
    assert invite.status_code == 201, invite.text
    log = await client.get(
        f"{org.path}/audit-logs",
        params={"action": "invitation.created"},
        headers=api_key_headers(key),
    )
    entry = log.json()["data"][0]
    assert entry["actorUserId"] == org.owner.id
    assert entry["actorApiKeyId"] is not None


async def test_expiry_without_a_timezone_is_400(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    response = await client.post(
        f"{org.path}/api-keys",
        json={"name": "k", "permissions": ["org:read"], "expiresAt": "2099-01-01T00:00:00"},
        headers=org.owner.headers,
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "expiresAt"
