"""Members: list, role changes (nobody grants what they lack), remove, leave, ownership."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.factories import Account, Org, add_member, create_org, register


async def _role_of(client: httpx.AsyncClient, org: Org, account: Account) -> str | None:
    response = await client.get(f"{org.path}/members?limit=100", headers=org.owner.headers)
    roles = {m["userId"]: m["role"] for m in response.json()["data"]}
    return roles.get(account.id)


async def test_member_objects_have_the_contract_fields(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    viewer = await add_member(app, client, org, "viewer")
    response = await client.get(f"{org.path}/members", headers=viewer.headers)
    assert response.status_code == 200
    row = next(m for m in response.json()["data"] if m["userId"] == viewer.id)
    assert set(row) == {"userId", "email", "firstName", "lastName", "role", "joinedAt"}
    assert row["email"] == viewer.email


async def test_role_change_applies_on_the_very_next_request(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    member = await add_member(app, client, org, "admin")
    assert (await client.get(f"{org.path}/audit-logs", headers=member.headers)).status_code == 200
    response = await client.patch(
        f"{org.path}/members/{member.id}", json={"role": "viewer"}, headers=org.owner.headers
    )
    assert response.status_code == 200
    assert response.json()["data"]["role"] == "viewer"
    # Same access token (its claims never carried org roles): the cache was invalidated.
    assert (await client.get(f"{org.path}/audit-logs", headers=member.headers)).status_code == 403


async def test_admin_cannot_make_an_owner_nor_touch_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    member = await add_member(app, client, org, "member")
    promote = await client.patch(
        f"{org.path}/members/{member.id}", json={"role": "owner"}, headers=admin.headers
    )
    assert promote.status_code == 403
    demote_owner = await client.patch(
        f"{org.path}/members/{org.owner.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert demote_owner.status_code == 403
    remove_owner = await client.delete(f"{org.path}/members/{org.owner.id}", headers=admin.headers)
    assert remove_owner.status_code == 403
    ok = await client.patch(
        f"{org.path}/members/{member.id}", json={"role": "manager"}, headers=admin.headers
    )
    assert ok.status_code == 200
    assert await _role_of(client, org, member) == "manager"


async def test_last_owner_can_be_neither_demoted_nor_removed_nor_leave(
    client: httpx.AsyncClient,
) -> None:
    owner = await register(client)
    org = await create_org(client, owner)
    demote = await client.patch(
        f"{org.path}/members/{owner.id}", json={"role": "admin"}, headers=owner.headers
    )
    assert demote.status_code == 409
    leave = await client.delete(f"{org.path}/members/{owner.id}", headers=owner.headers)
    assert leave.status_code == 409
    assert await _role_of(client, org, owner) == "owner"


async def test_one_of_two_owners_may_step_down(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    second = await add_member(app, client, org, "owner")
    response = await client.patch(
        f"{org.path}/members/{second.id}", json={"role": "member"}, headers=second.headers
    )
    assert response.status_code == 200
    again = await client.patch(
        f"{org.path}/members/{org.owner.id}", json={"role": "member"}, headers=org.owner.headers
    )
    assert again.status_code == 409


async def test_a_member_can_leave_and_loses_access(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    viewer = await add_member(app, client, org, "viewer")
    assert (
        await client.delete(f"{org.path}/members/{viewer.id}", headers=viewer.headers)
    ).status_code == 204
    assert (await client.get(org.path, headers=viewer.headers)).status_code == 404


async def test_removing_someone_else_needs_members_manage(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    manager = await add_member(app, client, org, "manager")
    viewer = await add_member(app, client, org, "viewer")
    denied = await client.delete(f"{org.path}/members/{viewer.id}", headers=manager.headers)
    assert denied.status_code == 403
    removed = await client.delete(f"{org.path}/members/{viewer.id}", headers=org.owner.headers)
    assert removed.status_code == 204
    assert await _role_of(client, org, viewer) is None
    missing = await client.delete(f"{org.path}/members/{viewer.id}", headers=org.owner.headers)
    assert missing.status_code == 404


async def test_transfer_ownership_swaps_roles(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    denied = await client.post(
        f"{org.path}/transfer-ownership", json={"userId": admin.id}, headers=admin.headers
    )
    assert denied.status_code == 403
    response = await client.post(
        f"{org.path}/transfer-ownership", json={"userId": admin.id}, headers=org.owner.headers
    )
    assert response.status_code == 204
    assert await _role_of(client, org, admin) == "owner"
    assert await _role_of(client, org, org.owner) == "admin"
    # The former owner lost org:delete at once.
    assert (await client.delete(org.path, headers=org.owner.headers)).status_code == 403


async def test_transfer_to_a_non_member_is_404(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    stranger = await register(client)
    response = await client.post(
        f"{org.path}/transfer-ownership", json={"userId": stranger.id}, headers=org.owner.headers
    )
    assert response.status_code == 404


async def test_deactivated_or_signed_out_member_is_refused_on_tenant_routes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    from tests.factories import deactivate

    org = await create_org(client, await register(client))
    viewer = await add_member(app, client, org, "viewer")
    leaver = await add_member(app, client, org, "viewer")
    assert (await client.get(org.path, headers=viewer.headers)).status_code == 200
    await deactivate(app, client, viewer)
    assert (await client.get(org.path, headers=viewer.headers)).status_code == 401
    logout = await client.post(
        "/api/v1/auth/logout", json={"refreshToken": leaver.refresh_token}, headers=leaver.headers
    )
    assert logout.status_code in (200, 204), logout.text
    assert (await client.get(org.path, headers=leaver.headers)).status_code == 401


async def test_no_credentials_is_401_and_a_garbage_token_too(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    assert (await client.get(org.path)).status_code == 401
    garbage = {"Authorization": "Bearer not-a-token"}
    assert (await client.get(org.path, headers=garbage)).status_code == 401
