"""Platform administration of users (API.md: Users)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tenantry.modules.users.models import PlatformRole
from tests.factories import Account, create_account, register, unique_email

USERS = "/api/v1/users"
SECRET_FIELDS = ("password", "hash", "secret", "token")


async def admin(app: FastAPI, client: httpx.AsyncClient) -> Account:
    return await create_account(app, client, role=PlatformRole.ADMIN)


async def super_admin(app: FastAPI, client: httpx.AsyncClient) -> Account:
    return await create_account(app, client, role=PlatformRole.SUPER_ADMIN)


async def test_a_plain_user_gets_403_on_admin_routes(
    client: httpx.AsyncClient, account: Account
) -> None:
    other = await register(client)
    for method, path in [
        ("GET", USERS),
        ("POST", USERS),
        ("GET", f"{USERS}/{other.id}"),
        ("PATCH", f"{USERS}/{other.id}"),
        ("DELETE", f"{USERS}/{other.id}"),
        ("POST", f"{USERS}/{other.id}/restore"),
    ]:
        response = await client.request(method, path, headers=account.headers, json={})
        assert response.status_code == 403, (method, path, response.text)


async def test_admin_list_paginates_searches_and_filters(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    marker = unique_email("needle").split("@")[0]
    for i in range(3):
        await register(client, email=f"{marker}-{i}@example.com", lastName=f"Needle{i}")
    response = await client.get(
        USERS, params={"search": marker.upper(), "limit": 2}, headers=boss.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["meta"] == {
        "total": 3,
        "page": 1,
        "limit": 2,
        "totalPages": 2,
        "hasNextPage": True,
        "hasPrevPage": False,
    }
    assert [u["lastName"] for u in body["data"]] == ["Needle2", "Needle1"]
    page2 = await client.get(
        USERS,
        params={"search": marker, "limit": 2, "page": 2, "sortBy": "email", "sortOrder": "asc"},
        headers=boss.headers,
    )
    assert [u["lastName"] for u in page2.json()["data"]] == ["Needle2"]

    admins = await client.get(
        USERS, params={"role": "ADMIN", "search": boss.email}, headers=boss.headers
    )
    assert [u["id"] for u in admins.json()["data"]] == [boss.id]
    bad_sort = await client.get(USERS, params={"sortBy": "passwordHash"}, headers=boss.headers)
    assert bad_sort.status_code == 400


async def test_no_user_object_contains_a_hash_secret_or_token(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    listing = await client.get(USERS, params={"limit": 100}, headers=boss.headers)
    me = await client.get(f"{USERS}/me", headers=boss.headers)
    one = await client.get(f"{USERS}/{boss.id}", headers=boss.headers)
    for user in [*listing.json()["data"], me.json()["data"], one.json()["data"]]:
        for key in user:
            assert not any(word in key.lower() for word in SECRET_FIELDS), key
        assert not any(str(v).startswith("$argon2") for v in user.values())


async def test_admin_creates_users_but_only_a_super_admin_grants_admin_roles(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    created = await client.post(
        USERS,
        json={"email": unique_email(), "password": "initial password", "firstName": "New"},
        headers=boss.headers,
    )
    assert created.status_code == 201
    assert created.json()["data"]["role"] == "USER"

    for role in ("ADMIN", "SUPER_ADMIN"):
        denied = await client.post(
            USERS,
            json={"email": unique_email(), "password": "initial password", "role": role},
            headers=boss.headers,
        )
        assert denied.status_code == 403
        promote = await client.patch(
            f"{USERS}/{created.json()['data']['id']}", json={"role": role}, headers=boss.headers
        )
        assert promote.status_code == 403

    root = await super_admin(app, client)
    promoted = await client.patch(
        f"{USERS}/{created.json()['data']['id']}", json={"role": "ADMIN"}, headers=root.headers
    )
    assert promoted.status_code == 200
    assert promoted.json()["data"]["role"] == "ADMIN"
    demote_root = await client.patch(
        f"{USERS}/{root.id}", json={"role": "USER"}, headers=boss.headers
    )
    assert demote_root.status_code == 403


async def test_admin_create_rejects_a_taken_email(app: FastAPI, client: httpx.AsyncClient) -> None:
    boss = await admin(app, client)
    response = await client.post(
        USERS,
        json={"email": boss.email.upper(), "password": "initial password"},
        headers=boss.headers,
    )
    assert response.status_code == 409


async def test_soft_delete_hides_the_user_and_restore_brings_it_back(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    victim = await register(client)
    assert (await client.delete(f"{USERS}/{victim.id}", headers=boss.headers)).status_code == 204
    assert (await client.get(f"{USERS}/{victim.id}", headers=boss.headers)).status_code == 404
    listing = await client.get(USERS, params={"search": victim.email}, headers=boss.headers)
    assert listing.json()["data"] == []
    deleted = await client.get(
        USERS, params={"search": victim.email, "deleted": "only"}, headers=boss.headers
    )
    assert [u["id"] for u in deleted.json()["data"]] == [victim.id]

    restored = await client.post(f"{USERS}/{victim.id}/restore", headers=boss.headers)
    assert restored.status_code == 200
    assert restored.json()["data"]["deletedAt"] is None
    login = await client.post(
        "/api/v1/auth/login", json={"email": victim.email, "password": victim.password}
    )
    assert login.status_code == 200
    again = await client.post(f"{USERS}/{victim.id}/restore", headers=boss.headers)
    assert again.status_code == 404


async def test_reactivated_user_can_log_in_again(app: FastAPI, client: httpx.AsyncClient) -> None:
    boss = await admin(app, client)
    user = await register(client)
    off = await client.patch(f"{USERS}/{user.id}", json={"isActive": False}, headers=boss.headers)
    assert off.json()["data"]["isActive"] is False
    body = {"email": user.email, "password": user.password}
    assert (await client.post("/api/v1/auth/login", json=body)).status_code == 401
    await client.patch(f"{USERS}/{user.id}", json={"isActive": True}, headers=boss.headers)
    assert (await client.post("/api/v1/auth/login", json=body)).status_code == 200


async def test_an_admin_cannot_demote_deactivate_or_delete_itself(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root = await super_admin(app, client)
    for change in ({"role": "USER"}, {"isActive": False}):
        response = await client.patch(f"{USERS}/{root.id}", json=change, headers=root.headers)
        assert response.status_code == 403
    assert (await client.delete(f"{USERS}/{root.id}", headers=root.headers)).status_code == 403


async def test_unknown_or_malformed_user_ids(app: FastAPI, client: httpx.AsyncClient) -> None:
    boss = await admin(app, client)
    missing = await client.get(
        f"{USERS}/01234567-89ab-7def-8123-456789abcdef", headers=boss.headers
    )
    assert missing.status_code == 404
    malformed = await client.get(f"{USERS}/not-a-uuid", headers=boss.headers)
    assert malformed.status_code == 400


async def test_cursor_pagination_returns_every_user_exactly_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    marker = unique_email("cursor").split("@")[0]
    created = [(await register(client, email=f"{marker}-{i}@example.com")).id for i in range(5)]
    seen: list[str] = []
    cursor = ""
    while True:
        response = await client.get(
            USERS, params={"search": marker, "limit": 2, "cursor": cursor}, headers=boss.headers
        )
        assert response.status_code == 200
        body = response.json()
        assert set(body["meta"]) == {"limit", "nextCursor", "hasNextPage"}
        seen += [u["id"] for u in body["data"]]
        if not body["meta"]["hasNextPage"]:
            break
        cursor = body["meta"]["nextCursor"]
    assert seen == list(reversed(created))
    tampered = await client.get(USERS, params={"cursor": "garbage!"}, headers=boss.headers)
    assert tampered.status_code == 400


async def test_ascending_cursor_pages_follow_creation_order_and_need_created_at_sort(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    marker = unique_email("cursorasc").split("@")[0]
    created = [(await register(client, email=f"{marker}-{i}@example.com")).id for i in range(3)]
    params: dict[str, str | int] = {"search": marker, "limit": 2, "sortOrder": "asc"}
    first = await client.get(USERS, params={**params, "cursor": ""}, headers=boss.headers)
    cursor = first.json()["meta"]["nextCursor"]
    second = await client.get(USERS, params={**params, "cursor": cursor}, headers=boss.headers)
    seen = [u["id"] for u in first.json()["data"] + second.json()["data"]]
    assert seen == created
    assert second.json()["meta"]["hasNextPage"] is False
    by_email = await client.get(
        USERS, params={"sortBy": "email", "cursor": ""}, headers=boss.headers
    )
    assert by_email.status_code == 400
    assert by_email.json()["details"][0]["field"] == "cursor"


async def test_a_demoted_admin_loses_admin_access_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    boss = await admin(app, client)
    root = await super_admin(app, client)
    assert (await client.get(USERS, headers=boss.headers)).status_code == 200
    demoted = await client.patch(f"{USERS}/{boss.id}", json={"role": "USER"}, headers=root.headers)
    assert demoted.status_code == 200
    assert (await client.get(USERS, headers=boss.headers)).status_code == 403
