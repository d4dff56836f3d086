"""TOTP MFA: setup, enable, login with a code, replay, lockout, recovery codes, disable."""

from __future__ import annotations

import time
import urllib.parse
import uuid

import httpx
import pyotp
from fastapi import FastAPI
from sqlalchemy import select

from tenantry.modules.users.models import User
from tests.factories import Account, remember_secret

LOGIN = "/api/v1/auth/login"


def code_at(secret: str, step_offset: int) -> str:
    """The code of the 30-second step `step_offset` away from now (±1 is accepted)."""
    return pyotp.TOTP(secret).at(int(time.time()) + 30 * step_offset)


async def enable_mfa(client: httpx.AsyncClient, account: Account) -> tuple[str, list[str]]:
    """Set up and enable MFA using the previous step's code; returns (secret, recovery codes)."""
    setup = await client.post("/api/v1/auth/mfa/setup", headers=account.headers)
    assert setup.status_code == 200, setup.text
    secret = setup.json()["data"]["secret"]
    enabled = await client.post(
        "/api/v1/auth/mfa/enable",
        json={"password": account.password, "code": code_at(secret, -1)},
        headers=account.headers,
    )
    assert enabled.status_code == 200, enabled.text
    codes = enabled.json()["data"]["recoveryCodes"]
    remember_secret(secret, *codes)
    return secret, codes


def _login_body(account: Account, code: str | None = None) -> dict[str, str]:
    body = {"email": account.email, "password": account.password}
    if code is not None:
        body["mfaCode"] = code
    return body


async def test_setup_returns_a_secret_and_an_otpauth_uri(
    client: httpx.AsyncClient, account: Account
) -> None:
    response = await client.post("/api/v1/auth/mfa/setup", headers=account.headers)
    assert response.status_code == 200
    data = response.json()["data"]
    uri = urllib.parse.urlparse(data["otpauthUri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert urllib.parse.parse_qs(uri.query)["secret"] == [data["secret"]]
    me = await client.get("/api/v1/users/me", headers=account.headers)
    assert me.json()["data"]["mfaEnabled"] is False


async def test_enable_requires_a_valid_code_and_returns_ten_recovery_codes(
    client: httpx.AsyncClient, account: Account
) -> None:
    setup = await client.post("/api/v1/auth/mfa/setup", headers=account.headers)
    secret = setup.json()["data"]["secret"]
    wrong = await client.post(
        "/api/v1/auth/mfa/enable",
        json={"password": account.password, "code": "000000"},
        headers=account.headers,
    )
    if code_at(secret, 0) != "000000":
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_mfa_code"
    response = await client.post(
        "/api/v1/auth/mfa/enable",
        json={"password": account.password, "code": code_at(secret, 0)},
        headers=account.headers,
    )
    assert response.status_code == 200
    codes = response.json()["data"]["recoveryCodes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    me = await client.get("/api/v1/users/me", headers=account.headers)
    assert me.json()["data"]["mfaEnabled"] is True


async def test_enable_needs_the_current_password_and_changes_nothing_without_it(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    """A stolen access token alone cannot put a second factor on the account."""
    setup = await client.post("/api/v1/auth/mfa/setup", headers=account.headers)
    secret = setup.json()["data"]["secret"]
    code = code_at(secret, 0)

    missing = await client.post(
        "/api/v1/auth/mfa/enable", json={"code": code}, headers=account.headers
    )
    assert missing.status_code == 400
    assert missing.json()["code"] == "validation_error"
    wrong = await client.post(
        "/api/v1/auth/mfa/enable",
        json={"password": "not the owner's password", "code": code},
        headers=account.headers,
    )
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_credentials"

    me = await client.get("/api/v1/users/me", headers=account.headers)
    assert me.json()["data"]["mfaEnabled"] is False
    async with app.state.database.transaction() as session:
        user = await session.get(User, uuid.UUID(account.id))
        assert user is not None
        assert (user.mfa_failed_attempts, user.mfa_last_step) == (0, None)
    plain = await client.post(LOGIN, json=_login_body(account))
    assert plain.status_code == 200  # no MFA was turned on

    # The same code still works with the password: the refused tries consumed nothing.
    enabled = await client.post(
        "/api/v1/auth/mfa/enable",
        json={"password": account.password, "code": code},
        headers=account.headers,
    )
    assert enabled.status_code == 200


async def test_a_password_reset_keeps_mfa_on(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    """The reset link proves the mailbox, not the second factor: MFA stays (docs/auth.md)."""
    from tenantry.modules.auth.service import issue_password_reset_token

    secret, _ = await enable_mfa(client, account)
    async with app.state.database.transaction() as session:
        token = await issue_password_reset_token(session, app.state.settings, uuid.UUID(account.id))
    remember_secret(token)
    new_password = "reset while MFA is on"
    remember_secret(new_password)
    reset = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": new_password}
    )
    assert reset.status_code == 204
    body = {"email": account.email, "password": new_password}
    missing = await client.post(LOGIN, json=body)
    assert missing.status_code == 401
    assert missing.json()["code"] == "mfa_required"
    assert (
        await client.post(LOGIN, json=body | {"mfaCode": code_at(secret, 0)})
    ).status_code == 200


async def test_login_then_requires_an_mfa_code(client: httpx.AsyncClient, account: Account) -> None:
    secret, _ = await enable_mfa(client, account)
    missing = await client.post(LOGIN, json=_login_body(account))
    assert missing.status_code == 401
    assert missing.json()["code"] == "mfa_required"
    ok = await client.post(LOGIN, json=_login_body(account, code_at(secret, 0)))
    assert ok.status_code == 200


async def test_a_totp_code_is_accepted_once_per_window(
    client: httpx.AsyncClient, account: Account
) -> None:
    secret, _ = await enable_mfa(client, account)
    code = code_at(secret, 0)
    first = await client.post(LOGIN, json=_login_body(account, code))
    assert first.status_code == 200
    replay = await client.post(LOGIN, json=_login_body(account, code))
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_mfa_code"
    older = await client.post(LOGIN, json=_login_body(account, code_at(secret, -1)))
    assert older.status_code == 401


async def test_a_recovery_code_works_once(client: httpx.AsyncClient, account: Account) -> None:
    _, codes = await enable_mfa(client, account)
    first = await client.post(LOGIN, json=_login_body(account, codes[0].upper()))
    assert first.status_code == 200
    again = await client.post(LOGIN, json=_login_body(account, codes[0]))
    assert again.status_code == 401
    assert again.json()["code"] == "invalid_mfa_code"
    other = await client.post(LOGIN, json=_login_body(account, codes[1]))
    assert other.status_code == 200


async def test_five_wrong_codes_in_a_row_lock_mfa_for_fifteen_minutes(
    client: httpx.AsyncClient, account: Account
) -> None:
    secret, _ = await enable_mfa(client, account)
    valid = code_at(secret, 0)
    wrong = "123456" if valid != "123456" else "654321"
    for _ in range(5):
        response = await client.post(LOGIN, json=_login_body(account, wrong))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_mfa_code"
    locked = await client.post(LOGIN, json=_login_body(account, valid))
    assert locked.status_code == 429
    assert 14 * 60 < int(locked.headers["retry-after"]) <= 15 * 60


async def test_a_success_resets_the_wrong_code_count(
    client: httpx.AsyncClient, account: Account
) -> None:
    secret, _ = await enable_mfa(client, account)
    wrong = "123456" if code_at(secret, 0) != "123456" else "654321"
    for _ in range(4):
        assert (await client.post(LOGIN, json=_login_body(account, wrong))).status_code == 401
    assert (
        await client.post(LOGIN, json=_login_body(account, code_at(secret, 0)))
    ).status_code == 200
    for _ in range(4):
        assert (await client.post(LOGIN, json=_login_body(account, wrong))).status_code == 401
    assert (
        await client.post(LOGIN, json=_login_body(account, code_at(secret, 1)))
    ).status_code == 200


async def test_disable_needs_password_and_code(client: httpx.AsyncClient, account: Account) -> None:
    secret, _ = await enable_mfa(client, account)
    no_password = await client.post(
        "/api/v1/auth/mfa/disable",
        json={"password": "wrong password", "code": code_at(secret, 0)},
        headers=account.headers,
    )
    assert no_password.status_code == 401
    response = await client.post(
        "/api/v1/auth/mfa/disable",
        json={"password": account.password, "code": code_at(secret, 0)},
        headers=account.headers,
    )
    assert response.status_code == 204
    plain = await client.post(LOGIN, json=_login_body(account))
    assert plain.status_code == 200
    assert plain.json()["data"]["user"]["mfaEnabled"] is False


async def test_the_secret_is_stored_encrypted(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    secret, _ = await enable_mfa(client, account)
    async with app.state.database.transaction() as session:
        stored = await session.scalar(
            select(User.mfa_secret_encrypted).where(User.id == uuid.UUID(account.id))
        )
    assert stored is not None
    assert secret not in stored
