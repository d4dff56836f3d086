"""Account lifecycle and API keys (API.md: Users, API keys): a key acts only while its
creator is active and a member, with the creator's current rights; erasure removes the
memberships, revokes the keys, refuses a last owner (409, nothing changed) and deletes an
organization the caller was alone in; the export lists everything stored about the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tenantry.modules.orgs.models import Organization
from tenantry.modules.users.models import PlatformRole
from tests.conftest import NO_RLS
from tests.factories import (
    Account,
    Org,
    add_member,
    api_key_headers,
    create_account,
    create_api_key,
    create_org,
    deactivate,
    register,
    soft_delete,
)
from tests.files.samples import PNG

Offboarding = Callable[[FastAPI, httpx.AsyncClient, Account], Awaitable[None]]


async def erase(_app: FastAPI, client: httpx.AsyncClient, account: Account) -> None:
    response = await client.request(
        "DELETE", "/api/v1/users/me", json={"password": account.password}, headers=account.headers
    )
    assert response.status_code == 204, response.text


async def _listed_key(client: httpx.AsyncClient, org: Org, key: str) -> dict[str, Any]:
    listed = await client.get(f"{org.path}/api-keys", headers=org.owner.headers)
    assert listed.status_code == 200, listed.text
    entry: dict[str, Any] = next(k for k in listed.json()["data"] if key.startswith(k["prefix"]))
    return entry


async def _key_status(client: httpx.AsyncClient, org: Org, key: str) -> str:
    return str((await _listed_key(client, org, key))["status"])


async def _use_key(client: httpx.AsyncClient, org: Org, key: str) -> tuple[int, int]:
    """A read and a write with the key: (status of the read, status of the write)."""
    headers = api_key_headers(key)
    read = await client.get(f"{org.path}/members", headers=headers)
    write = await client.post(
        f"{org.path}/projects", json={"name": f"p-{uuid.uuid4().hex[:6]}"}, headers=headers
    )
    return read.status_code, write.status_code


@pytest.mark.parametrize("offboard", [deactivate, soft_delete, erase], ids=lambda f: f.__name__)
async def test_a_key_stops_at_once_when_its_creator_is_offboarded(
    app: FastAPI, client: httpx.AsyncClient, offboard: Offboarding
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    key = await create_api_key(client, org, ["members:read", "projects:write"], by=admin)
    # Used first: the creator's membership is cached when the account changes.
    assert await _use_key(client, org, key) == (200, 201)
    assert await _key_status(client, org, key) == "active"

    await offboard(app, client, admin)

    assert await _use_key(client, org, key) == (401, 401)
    listed = await _listed_key(client, org, key)
    assert listed["status"] == "revoked"
    assert listed["revokedAt"] is not None


async def test_a_key_checks_its_creator_on_every_use_not_only_through_revocation(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The per-use check stands on its own: an account switched off outside the services
    (no revocation written, e.g. by an operator in SQL) still stops its keys at once."""
    from sqlalchemy import update

    from tenantry.modules.users.models import User

    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    key = await create_api_key(client, org, ["members:read", "projects:write"], by=admin)
    assert await _use_key(client, org, key) == (200, 201)
    async with app.state.database.transaction() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(admin.id)).values(is_active=False)
        )

    assert await _use_key(client, org, key) == (401, 401)
    listed = await _listed_key(client, org, key)
    assert (listed["status"], listed["revokedAt"]) == ("revoked", None)


async def test_a_returning_creator_does_not_revive_their_keys(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    key = await create_api_key(client, org, ["members:read", "projects:write"], by=admin)
    await deactivate(app, client, admin)
    platform = (await create_account(app, client, role=PlatformRole.SUPER_ADMIN)).headers
    back = await client.patch(
        f"/api/v1/users/{admin.id}", json={"isActive": True}, headers=platform
    )
    assert back.status_code == 200, back.text
    assert await _use_key(client, org, key) == (401, 401)
    assert await _key_status(client, org, key) == "revoked"
    audit = await client.get(
        f"{org.path}/audit-logs", params={"action": "api_key.revoked"}, headers=org.owner.headers
    )
    assert [e["changes"]["reason"][1] for e in audit.json()["data"]] == ["creator_deactivated"]


async def test_a_key_stops_when_its_creator_leaves_and_is_not_revived_by_rejoining(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    key = await create_api_key(client, org, ["members:read", "projects:write"], by=admin)
    assert await _use_key(client, org, key) == (200, 201)
    removed = await client.delete(f"{org.path}/members/{admin.id}", headers=org.owner.headers)
    assert removed.status_code == 204
    assert await _use_key(client, org, key) == (401, 401)
    assert await _key_status(client, org, key) == "revoked"
    await add_member(app, client, org, "admin", account=admin)
    assert await _use_key(client, org, key) == (401, 401)


async def test_a_key_has_only_what_its_creators_current_role_allows(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    key = await create_api_key(client, org, ["members:read", "projects:write"], by=admin)
    assert await _use_key(client, org, key) == (200, 201)
    lowered = await client.patch(
        f"{org.path}/members/{admin.id}", json={"role": "member"}, headers=org.owner.headers
    )
    assert lowered.status_code == 200
    read, write = await _use_key(client, org, key)
    assert (read, write) == (200, 403)


async def _member_ids(client: httpx.AsyncClient, org: Org) -> set[str]:
    listed = await client.get(f"{org.path}/members", headers=org.owner.headers)
    return {m["userId"] for m in listed.json()["data"]}


async def test_erasing_the_last_owner_of_a_shared_organization_is_409_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await register(client)
    alone = await create_org(client, owner)  # would be deleted, were the erasure allowed
    shared = await create_org(client, owner)
    colleague = await add_member(app, client, shared, "admin")
    key = await create_api_key(client, shared, ["members:read", "projects:write"])

    response = await client.request(
        "DELETE", "/api/v1/users/me", json={"password": owner.password}, headers=owner.headers
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"

    me = await client.get("/api/v1/users/me", headers=owner.headers)
    assert me.status_code == 200
    assert me.json()["data"]["email"] == owner.email
    assert await _member_ids(client, shared) == {owner.id, colleague.id}
    assert await _member_ids(client, alone) == {owner.id}
    assert await _use_key(client, shared, key) == (200, 201)
    assert await _key_status(client, shared, key) == "active"
    relogin = await client.post(
        "/api/v1/auth/login", json={"email": owner.email, "password": owner.password}
    )
    assert relogin.status_code == 200


async def test_erasure_leaves_every_organization_and_deletes_one_the_caller_was_alone_in(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    alone = await create_org(client, user)
    other = await create_org(client, await register(client))
    await add_member(app, client, other, "admin", account=user)
    key = await create_api_key(client, other, ["members:read"], by=user)
    assert user.id in await _member_ids(client, other)

    await erase(app, client, user)

    assert user.id not in await _member_ids(client, other)
    revoked = await _listed_key(client, other, key)
    assert revoked["status"] == "revoked"
    assert revoked["revokedAt"] is not None  # revoked for good, not only while erased
    async with app.state.database.transaction() as session:
        deleted_at = await session.scalar(
            select(Organization.deleted_at).where(Organization.id == uuid.UUID(alone.id))
        )
        live_other = await session.scalar(
            select(Organization.deleted_at).where(Organization.id == uuid.UUID(other.id))
        )
    assert deleted_at is not None
    assert live_other is None
    audit = await client.get(
        f"{other.path}/audit-logs", params={"action": "member.left"}, headers=other.owner.headers
    )
    assert [e["changes"]["user_id"][0] for e in audit.json()["data"]] == [user.id]


async def test_export_lists_memberships_invitations_keys_files_and_own_audit_entries(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    mine = await create_org(client, user)
    theirs = await create_org(client, await register(client))
    await add_member(app, client, theirs, "manager", account=user)
    key = await create_api_key(client, mine, ["members:read"], by=user)
    invitee = f"invitee-{uuid.uuid4().hex[:8]}@example.com"
    sent = await client.post(
        f"{mine.path}/invitations", json={"email": invitee, "role": "member"}, headers=user.headers
    )
    assert sent.status_code == 201, sent.text
    third = await create_org(client, await register(client))
    received = await client.post(
        f"{third.path}/invitations",
        json={"email": user.email, "role": "viewer"},
        headers=third.owner.headers,
    )
    assert received.status_code == 201, received.text
    uploaded = await client.post(
        f"{theirs.path}/files", files={"file": ("me.png", PNG, "image/png")}, headers=user.headers
    )
    assert uploaded.status_code == 201, uploaded.text

    response = await client.get("/api/v1/users/me/export", headers=user.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert {(m["organizationId"], m["role"]) for m in data["memberships"]} == {
        (mine.id, "owner"),
        (theirs.id, "manager"),
    }
    assert all(m["joinedAt"] and m["organizationName"] for m in data["memberships"])
    assert [i["email"] for i in data["invitationsSent"]] == [invitee]
    assert [i["organizationId"] for i in data["invitationsReceived"]] == [third.id]
    assert [k["prefix"] for k in data["apiKeys"]] == [key[:12]]
    assert [f["filename"] for f in data["files"]] == ["me.png"]
    assert data["files"][0]["organizationId"] == theirs.id
    actions = {e["action"] for e in data["auditEntries"]}
    assert {"organization.created", "api_key.created", "invitation.created"} <= actions
    assert key not in response.text
    assert hashlib.sha256(key.encode()).hexdigest() not in response.text
    assert '"keyHash"' not in response.text
    assert "storageKey" not in response.text
    assert "tokenHash" not in response.text
    # Someone else's actions in the same organizations are not the caller's data.
    assert all(e["organizationId"] in (mine.id, theirs.id) for e in data["auditEntries"])
    owners_actions = await client.get(
        f"{theirs.path}/audit-logs",
        params={"actorUserId": theirs.owner.id},
        headers=theirs.owner.headers,
    )
    theirs_ids = {e["id"] for e in owners_actions.json()["data"]}
    assert theirs_ids
    assert not theirs_ids & {e["id"] for e in data["auditEntries"]}


@pytest.mark.services
@pytest.mark.postgresql_only(NO_RLS)
async def test_erasure_and_export_work_as_the_app_role_under_rls(build_app) -> None:  # type: ignore[no-untyped-def]
    """Erasure writes in each organization in turn and the export reads across them:
    under row-level security (the app role) nothing may be silently filtered out."""
    from tests.conftest import client_for

    app: FastAPI = await build_app(database_app_role="tenantry_app", rate_limit_enabled=False)
    async with client_for(app) as http:
        user = await register(http)
        alone = await create_org(http, user)
        other = await create_org(http, await register(http))
        await add_member(app, http, other, "admin", account=user)
        keys = [
            await create_api_key(http, alone, ["members:read"], by=user),
            await create_api_key(http, other, ["members:read"], by=user),
        ]
        exported = await http.get("/api/v1/users/me/export", headers=user.headers)
        assert sorted(k["prefix"] for k in exported.json()["data"]["apiKeys"]) == sorted(
            k[:12] for k in keys
        )
        assert len(exported.json()["data"]["memberships"]) == 2

        await erase(app, http, user)

        assert (await _listed_key(http, other, keys[1]))["revokedAt"] is not None
        assert await _use_key(http, other, keys[1]) == (401, 401)
        assert user.id not in await _member_ids(http, other)
        async with app.state.database.transaction() as session:
            deleted_at = await session.scalar(
                select(Organization.deleted_at).where(Organization.id == uuid.UUID(alone.id))
            )
        assert deleted_at is not None


async def test_two_owners_erasing_at_once_both_succeed_and_the_organization_goes_with_the_last(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await register(client)
    org = await create_org(client, first)
    second = await add_member(app, client, org, "owner")
    responses = await asyncio.gather(
        *(
            client.request(
                "DELETE", "/api/v1/users/me", json={"password": a.password}, headers=a.headers
            )
            for a in (first, second)
        )
    )
    assert sorted(r.status_code for r in responses) == [204, 204], [r.text for r in responses]
    async with app.state.database.transaction() as session:
        deleted_at = await session.scalar(
            select(Organization.deleted_at).where(Organization.id == uuid.UUID(org.id))
        )
    assert deleted_at is not None
