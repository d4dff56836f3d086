"""Logout, logout-all, session listing and revocation (API.md: Auth, sessions)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.factories import Account, deactivate, login, register, soft_delete

ME = "/api/v1/users/me"
SESSIONS = "/api/v1/auth/sessions"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_logout_revokes_the_refresh_token_and_is_idempotent(
    client: httpx.AsyncClient, account: Account
) -> None:
    for _ in range(2):
        response = await client.post(
            "/api/v1/auth/logout", json={"refreshToken": account.refresh_token}
        )
        assert response.status_code == 204
        assert response.content == b""
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refreshToken": account.refresh_token}
    )
    assert refreshed.status_code == 401
    assert (await client.get(ME, headers=account.headers)).status_code == 401
    unknown = await client.post("/api/v1/auth/logout", json={"refreshToken": "unknown"})
    assert unknown.status_code == 204


async def test_logout_all_makes_existing_access_tokens_401(
    client: httpx.AsyncClient, account: Account
) -> None:
    other = await login(client, account.email)
    assert (await client.get(ME, headers=other.headers)).status_code == 200

    response = await client.post("/api/v1/auth/logout-all", headers=account.headers)
    assert response.status_code == 204

    for session in (account, other):
        assert (await client.get(ME, headers=session.headers)).status_code == 401
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refreshToken": session.refresh_token}
        )
        assert refreshed.status_code == 401
    fresh = await login(client, account.email)
    assert (await client.get(ME, headers=fresh.headers)).status_code == 200


async def test_sessions_list_shows_device_ip_last_use_and_the_current_one(
    client: httpx.AsyncClient, account: Account
) -> None:
    await client.post(
        "/api/v1/auth/login",
        json={"email": account.email, "password": account.password},
        headers={"User-Agent": "Phone/1.0"},
    )
    response = await client.get(SESSIONS, headers=account.headers)
    assert response.status_code == 200
    sessions = response.json()["data"]
    assert len(sessions) == 2
    assert set(sessions[0]) == {"id", "userAgent", "ip", "createdAt", "lastUsedAt", "current"}
    assert [s["current"] for s in sessions].count(True) == 1
    assert {s["userAgent"] for s in sessions} >= {"Phone/1.0"}
    assert all(s["ip"] == "127.0.0.1" for s in sessions)


async def test_revoking_one_session_ends_it_and_only_it(
    client: httpx.AsyncClient, account: Account
) -> None:
    phone = await login(client, account.email)
    sessions = (await client.get(SESSIONS, headers=account.headers)).json()["data"]
    phone_id = next(s["id"] for s in sessions if not s["current"])

    response = await client.delete(f"{SESSIONS}/{phone_id}", headers=account.headers)
    assert response.status_code == 204
    assert (await client.get(ME, headers=phone.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refreshToken": phone.refresh_token}
    )
    assert refreshed.status_code == 401
    assert (await client.get(ME, headers=account.headers)).status_code == 200
    again = await client.delete(f"{SESSIONS}/{phone_id}", headers=account.headers)
    assert again.status_code == 404


async def test_another_users_session_cannot_be_revoked(
    client: httpx.AsyncClient, account: Account
) -> None:
    stranger = await register(client)
    sessions = (await client.get(SESSIONS, headers=stranger.headers)).json()["data"]
    response = await client.delete(f"{SESSIONS}/{sessions[0]['id']}", headers=account.headers)
    assert response.status_code == 404
    assert (await client.get(ME, headers=stranger.headers)).status_code == 200


async def test_deactivating_or_deleting_a_user_kills_its_sessions_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for kill in (deactivate, soft_delete):
        victim = await register(client)
        assert (await client.get(ME, headers=victim.headers)).status_code == 200
        await kill(app, client, victim)
        assert (await client.get(ME, headers=victim.headers)).status_code == 401
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refreshToken": victim.refresh_token}
        )
        assert refreshed.status_code == 401
