"""GDPR: export and erasure of the caller's account (API.md: Users)."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tenantry.modules.auth.models import AuthSession, RefreshToken
from tenantry.modules.users.models import User
from tests.factories import Account, login


async def test_export_returns_everything_stored_about_the_caller(
    client: httpx.AsyncClient, account: Account
) -> None:
    await login(client, account.email)
    response = await client.get("/api/v1/users/me/export", headers=account.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["user"]["email"] == account.email
    assert len(data["sessions"]) == 2
    assert {"userAgent", "ip", "createdAt", "lastUsedAt"} <= set(data["sessions"][0])
    assert data["mfaRecoveryCodesRemaining"] == 0
    assert account.refresh_token not in response.text
    assert "$argon2" not in response.text


async def test_delete_me_requires_the_password(client: httpx.AsyncClient, account: Account) -> None:
    missing = await client.request("DELETE", "/api/v1/users/me", headers=account.headers)
    assert missing.status_code == 400
    wrong = await client.request(
        "DELETE", "/api/v1/users/me", json={"password": "not it at all"}, headers=account.headers
    )
    assert wrong.status_code == 401
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 200


async def test_delete_me_anonymises_revokes_and_keeps_the_row(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    await client.patch("/api/v1/users/me", json={"firstName": "Erin"}, headers=account.headers)
    response = await client.request(
        "DELETE", "/api/v1/users/me", json={"password": account.password}, headers=account.headers
    )
    assert response.status_code == 204
    assert (await client.get("/api/v1/users/me", headers=account.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refreshToken": account.refresh_token}
    )
    assert refreshed.status_code == 401
    relogin = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert relogin.status_code == 401

    user_id = uuid.UUID(account.id)
    async with app.state.database.transaction() as session:
        user = await session.get(User, user_id)
        sessions = await session.scalar(
            select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user_id)
        )
        tokens = await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .join(AuthSession)
            .where(AuthSession.user_id == user_id)
        )
    assert user is not None
    assert account.email not in user.email
    assert user.first_name is None
    assert user.deleted_at is not None
    assert (sessions, tokens) == (0, 0)

    # The address is free again for a new account.
    again = await client.post(
        "/api/v1/auth/register", json={"email": account.email, "password": account.password}
    )
    assert again.status_code == 201
