"""Register, login, /users/me: the account basics of API.md (section Auth)."""

from __future__ import annotations

import time

import httpx
from fastapi import FastAPI

from tests.conftest import client_for
from tests.factories import (
    DEFAULT_PASSWORD,
    Account,
    deactivate,
    login,
    register,
    soft_delete,
    unique_email,
)

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/users/me"
USER_FIELDS = {
    "id",
    "email",
    "firstName",
    "lastName",
    "role",
    "isActive",
    "emailVerified",
    "mfaEnabled",
    "createdAt",
    "updatedAt",
}


async def test_register_returns_the_user_and_a_token_pair(client: httpx.AsyncClient) -> None:
    email = unique_email()
    response = await client.post(
        REGISTER, json={"email": email, "password": DEFAULT_PASSWORD, "firstName": "Ada"}
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert set(data) == {"user", "accessToken", "refreshToken", "tokenType", "expiresIn"}
    assert data["tokenType"] == "Bearer"
    assert data["expiresIn"] == 900
    assert set(data["user"]) == USER_FIELDS
    assert data["user"]["email"] == email
    assert data["user"]["role"] == "USER"
    assert data["user"]["emailVerified"] is False
    assert data["user"]["createdAt"].endswith("Z")
    assert len(data["refreshToken"]) >= 43  # 256 bits, URL-safe base64


async def test_email_is_trimmed_lowercased_and_unique_case_insensitively(
    client: httpx.AsyncClient,
) -> None:
    email = unique_email()
    account = await register(client, email=f"  {email.upper()} ")
    assert account.user["email"] == email
    again = await client.post(REGISTER, json={"email": email.title(), "password": "x" * 12})
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    assert (await login(client, email.upper())).user["id"] == account.id


async def test_password_length_limits_are_8_to_128_characters(client: httpx.AsyncClient) -> None:
    for password in ("short7!", "p" * 129):
        response = await client.post(REGISTER, json={"email": unique_email(), "password": password})
        assert response.status_code == 400
        assert response.json()["details"][0]["field"] == "password"
    for password in ("8chars!!", "p" * 128, "пароль-密码-🔐🔐"):
        await register(client, password=password)


async def test_a_validation_error_never_contains_the_submitted_password(
    client: httpx.AsyncClient,
) -> None:
    secret = "Sh0rt!"
    response = await client.post(REGISTER, json={"email": "not-an-email", "password": secret})
    assert response.status_code == 400
    assert secret not in response.text
    long_secret = "L" * 129
    response = await client.post(LOGIN, json={"email": unique_email(), "password": long_secret})
    assert response.status_code == 400
    assert long_secret not in response.text


async def test_unknown_fields_are_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        json={"email": unique_email(), "password": DEFAULT_PASSWORD, "role": "SUPER_ADMIN"},
    )
    assert response.status_code == 400
    assert response.json()["details"] == [{"field": "role", "message": "Unknown field"}]


async def test_an_80_byte_password_cannot_log_in_with_its_first_72_bytes(
    client: httpx.AsyncClient,
) -> None:
    password = "a" * 72 + "b" * 8
    account = await register(client, password=password)
    response = await client.post(LOGIN, json={"email": account.email, "password": "a" * 72})
    assert response.status_code == 401
    assert (await login(client, account.email, password)).user["id"] == account.id


async def test_unknown_email_wrong_password_inactive_and_deleted_get_the_same_401(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    inactive = await register(client)
    deleted = await register(client)
    await deactivate(app, client, inactive)
    await soft_delete(app, client, deleted)

    attempts = [
        {"email": unique_email(), "password": DEFAULT_PASSWORD},
        {"email": account.email, "password": DEFAULT_PASSWORD + "x"},
        {"email": inactive.email, "password": DEFAULT_PASSWORD},
        {"email": deleted.email, "password": DEFAULT_PASSWORD},
    ]
    bodies = []
    for attempt in attempts:
        response = await client.post(LOGIN, json=attempt)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        bodies.append((body["code"], body["message"], body["statusCode"], str(body["details"])))
    assert len(set(bodies)) == 1
    assert bodies[0][0] == "invalid_credentials"


async def test_login_of_an_unknown_email_spends_comparable_time(build_app) -> None:
    # A hashing cost well above the HTTP overhead, so skipping the hash would show.
    app = await build_app(password_hash_memory_kib=32 * 1024, password_hash_time_cost=2)
    async with client_for(app) as client:
        account = await register(client)

        async def timed(email: str) -> float:
            start = time.perf_counter()
            response = await client.post(LOGIN, json={"email": email, "password": "wrong-pass"})
            assert response.status_code == 401
            return time.perf_counter() - start

        await timed(unique_email())  # the dummy hash is computed once, lazily
        # Interleaved, so a burst of load on a shared machine slows both kinds alike; the
        # account's own login delay starts after LOGIN_BACKOFF_FREE_ATTEMPTS (5) failures.
        known: list[float] = []
        unknown: list[float] = []
        for _ in range(4):
            known.append(await timed(account.email))
            unknown.append(await timed(unique_email()))
    assert min(unknown) > min(known) / 2, (known, unknown)


async def test_get_and_patch_me(auth_client: httpx.AsyncClient, account: Account) -> None:
    response = await auth_client.get(ME)
    assert response.status_code == 200
    assert response.json()["data"]["id"] == account.id

    response = await auth_client.patch(ME, json={"firstName": " Grace ", "lastName": "Hopper"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["firstName"], data["lastName"]) == ("Grace", "Hopper")
    assert (await auth_client.get(ME)).json()["data"]["lastName"] == "Hopper"

    response = await auth_client.patch(ME, json={"email": "other@example.com"})
    assert response.status_code == 400


async def test_me_requires_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get(ME)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
