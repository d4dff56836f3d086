"""Audit log: one entry per change, in the same transaction, with actor, request facts and
field-level changes (secrets redacted); filters and pagination; append-only."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Uuid, bindparam, delete, select, text, update

from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.audit.models import AuditLog, AuditLogImmutable
from tenantry.modules.audit.service import redact
from tests.factories import add_member, create_api_key, create_org, register


async def entries(
    client: httpx.AsyncClient, org_path: str, headers: dict[str, str], **params: str
) -> list[dict]:  # type: ignore[type-arg]
    response = await client.get(
        f"{org_path}/audit-logs", params={"limit": "100", **params}, headers=headers
    )
    assert response.status_code == 200, response.text
    data: list[dict] = response.json()["data"]  # type: ignore[type-arg]
    return data


async def test_a_role_change_writes_one_entry_with_actor_changes_and_request_facts(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    member = await add_member(app, client, org, "member")
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    response = await client.patch(
        f"{org.path}/members/{member.id}",
        json={"role": "viewer"},
        headers={**org.owner.headers, "X-Request-Id": request_id, "User-Agent": "audit-test/1"},
    )
    assert response.status_code == 200
    found = await entries(client, org.path, org.owner.headers, action="member.role_changed")
    assert len(found) == 1
    entry = found[0]
    assert entry["actorUserId"] == org.owner.id
    assert entry["actorApiKeyId"] is None
    assert entry["changes"]["role"] == ["member", "viewer"]
    assert entry["entityType"] == "membership"
    assert (entry["requestId"], entry["userAgent"]) == (request_id, "audit-test/1")
    assert entry["ip"]


async def test_every_org_membership_invitation_and_key_change_is_logged(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    headers = org.owner.headers
    await client.patch(org.path, json={"name": "Audited"}, headers=headers)
    member = await add_member(app, client, org, "member")
    await client.patch(f"{org.path}/members/{member.id}", json={"role": "admin"}, headers=headers)
    await client.post(f"{org.path}/transfer-ownership", json={"userId": member.id}, headers=headers)
    invited = await client.post(
        f"{org.path}/invitations",
        json={"email": f"a-{uuid.uuid4().hex[:6]}@example.com", "role": "viewer"},
        headers=headers,
    )
    await client.delete(f"{org.path}/invitations/{invited.json()['data']['id']}", headers=headers)
    await create_api_key(client, org, ["members:read"])
    keys = await client.get(f"{org.path}/api-keys", headers=headers)
    await client.delete(f"{org.path}/api-keys/{keys.json()['data'][0]['id']}", headers=headers)
    # The former owner (now admin) leaves; the new owner reads the log.
    await client.delete(f"{org.path}/members/{org.owner.id}", headers=headers)
    found = await entries(client, org.path, member.headers, sortOrder="asc")
    actions = [e["action"] for e in found]
    assert actions == [
        "organization.created",
        "organization.updated",
        "member.role_changed",
        "organization.ownership_transferred",
        "invitation.created",
        "invitation.revoked",
        "api_key.created",
        "api_key.revoked",
        "member.left",
    ]


async def test_secrets_and_hashes_are_redacted(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    key = await create_api_key(client, org, ["members:read"])
    [entry] = await entries(client, org.path, org.owner.headers, action="api_key.created")
    assert entry["changes"]["key_hash"] == ["[redacted]", "[redacted]"]
    assert key not in str(entry)
    assert key[12:] not in str(entry)
    assert redact({"password": ("a", "b"), "token_hash": ("c", "d"), "name": ("e", "f")}) == {
        "password": ["[redacted]", "[redacted]"],
        "token_hash": ["[redacted]", "[redacted]"],
        "name": ["e", "f"],
    }


async def test_filters_and_pagination(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    members = [await add_member(app, client, org, "member") for _ in range(3)]
    for m in members:
        await client.patch(
            f"{org.path}/members/{m.id}", json={"role": "viewer"}, headers=org.owner.headers
        )
    changed = await entries(client, org.path, org.owner.headers, action="member.role_changed")
    assert len(changed) == 3
    one = changed[0]["entityId"]
    assert [
        e["entityId"] for e in await entries(client, org.path, org.owner.headers, entityId=one)
    ] == [one]
    assert len(await entries(client, org.path, org.owner.headers, entityType="organization")) == 1
    assert len(await entries(client, org.path, org.owner.headers, actorUserId=org.owner.id)) == 4
    assert await entries(client, org.path, org.owner.headers, actorUserId=str(uuid.uuid4())) == []
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await entries(client, org.path, org.owner.headers, **{"from": future}) == []
    assert (
        len(await entries(client, org.path, org.owner.headers, **{"from": past, "to": future})) == 4
    )
    paged = await client.get(
        f"{org.path}/audit-logs", params={"limit": "2", "page": "2"}, headers=org.owner.headers
    )
    assert paged.json()["meta"]["total"] == 4
    assert len(paged.json()["data"]) == 2
    bad = await client.get(
        f"{org.path}/audit-logs", params={"entityId": "nope"}, headers=org.owner.headers
    )
    assert bad.status_code == 400


async def test_reading_needs_audit_read(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    viewer = await add_member(app, client, org, "viewer")
    assert (await client.get(f"{org.path}/audit-logs", headers=viewer.headers)).status_code == 403


async def _change_an_entry(app: FastAPI, org_id: uuid.UUID) -> None:
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org_id))
        entry = await session.scalar(select(AuditLog))
        assert entry is not None
        entry.action = "forged"


async def _delete_an_entry(app: FastAPI, org_id: uuid.UUID) -> None:
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org_id))
        await session.delete(await session.scalar(select(AuditLog)))


async def _execute_bound(app: FastAPI, org_id: uuid.UUID, statement: Any) -> None:
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org_id))
        await session.execute(statement)


async def _raw(app: FastAPI, org_id: uuid.UUID, sql: str, *, as_app_role: bool) -> None:
    async with app.state.database.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # The session user (a superuser in tests), whatever DATABASE_APP_ROLE says.
            await conn.execute(text("SET LOCAL ROLE NONE"))
        if as_app_role:
            await conn.execute(text("SET LOCAL ROLE tenantry_app"))
            await conn.execute(
                text("SELECT set_config('app.org_id', :org, true)"), {"org": str(org_id)}
            )
        await conn.execute(text(sql).bindparams(bindparam("org", type_=Uuid())), {"org": org_id})


async def test_entries_cannot_be_changed_or_deleted_through_the_application(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    path = f"{org.path}/audit-logs"
    for method in ("PUT", "PATCH", "DELETE"):
        assert (await client.request(method, path, headers=org.owner.headers)).status_code == 405
    org_id = uuid.UUID(org.id)
    with pytest.raises(AuditLogImmutable):
        await _change_an_entry(app, org_id)
    with pytest.raises(AuditLogImmutable):
        await _delete_an_entry(app, org_id)
    for statement in (update(AuditLog).values(action="forged"), delete(AuditLog)):
        with pytest.raises(AuditLogImmutable):
            await _execute_bound(app, org_id, statement)
    assert [e["action"] for e in await entries(client, org.path, org.owner.headers)] == [
        "organization.created"
    ]


@pytest.mark.services
async def test_the_database_refuses_updates_and_deletes_of_audit_rows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A trigger on PostgreSQL (0005) and on MariaDB (0019); PostgreSQL's application role
    also lacks the privileges."""
    from sqlalchemy.exc import DBAPIError

    org = await create_org(client, await register(client))
    on_postgresql = app.state.database.engine.dialect.name == "postgresql"
    for sql in (
        "UPDATE audit_logs SET action = 'forged' WHERE organization_id = :org",
        "DELETE FROM audit_logs WHERE organization_id = :org",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            await _raw(app, uuid.UUID(org.id), sql, as_app_role=False)
        if on_postgresql:
            with pytest.raises(DBAPIError, match="permission denied"):
                await _raw(app, uuid.UUID(org.id), sql, as_app_role=True)
    assert [e["action"] for e in await entries(client, org.path, org.owner.headers)] == [
        "organization.created"
    ]
