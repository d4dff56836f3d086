"""The password and verification flows end to end, reading the emails the worker delivers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
import urllib.parse
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.conftest import client_for
from tests.factories import (
    age_refresh_rotation,
    login,
    register,
    remember_secret,
    unique_email,
)

TOKEN_IN_LINK = re.compile(r"token=([A-Za-z0-9%_.~-]+)")


@pytest.fixture
async def mail_app(build_app, tmp_path: Path) -> FastAPI:
    app: FastAPI = await build_app(
        var_dir=tmp_path,
        jobs_embedded_worker=True,
        jobs_poll_seconds=0.1,
        app_url="https://app.example.com",
        rate_limit_enabled=False,
    )
    return app


def _messages_to(tmp_path: Path, recipient: str) -> list[email.message.EmailMessage]:
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted((tmp_path / "mail").glob("*.eml"))
    ]
    return [m for m in messages if m["To"] == recipient]


async def wait_for_mail(
    tmp_path: Path, recipient: str, subject_word: str, within: float = 15
) -> str:
    """The plain-text body of the first message to `recipient` whose subject has the word."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for message in _messages_to(tmp_path, recipient):
            if subject_word.lower() in str(message["Subject"]).lower():
                return str(message.get_body(preferencelist=("plain",)).get_content())
        await asyncio.sleep(0.05)
    raise AssertionError(f"no '{subject_word}' email to {recipient} within {within}s")


def token_from(body: str, path: str) -> str:
    assert f"https://app.example.com{path}?token=" in body
    match = TOKEN_IN_LINK.search(body)
    assert match is not None
    token = urllib.parse.unquote(match.group(1))
    remember_secret(token)
    return token


async def test_the_verification_email_link_verifies_the_address(
    mail_app: FastAPI, tmp_path: Path
) -> None:
    async with client_for(mail_app) as client:
        account = await register(client, firstName="Vera")
        body = await wait_for_mail(tmp_path, account.email, "verify")
        assert "Vera" in body
        token = token_from(body, "/verify-email")
        response = await client.post("/api/v1/auth/email/verify", json={"token": token})
        assert response.status_code == 200
        assert response.json()["data"]["emailVerified"] is True


async def test_forgot_mails_a_reset_link_that_works_once_then_a_change_notice(
    mail_app: FastAPI, tmp_path: Path
) -> None:
    async with client_for(mail_app) as client:
        account = await register(client)
        accepted = await client.post("/api/v1/auth/password/forgot", json={"email": account.email})
        assert accepted.status_code == 202
        body = await wait_for_mail(tmp_path, account.email, "reset")
        assert "1 hour" in body
        token = token_from(body, "/reset-password")

        new_password = "reset by email link"
        remember_secret(new_password)
        reset = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": new_password}
        )
        assert reset.status_code == 204
        again = await client.post(
            "/api/v1/auth/password/reset", json={"token": token, "password": "and once more!"}
        )
        assert again.status_code == 400
        await login(client, account.email, new_password)
        await wait_for_mail(tmp_path, account.email, "password")  # the change notice


async def test_forgot_for_an_unknown_email_sends_nothing(mail_app: FastAPI, tmp_path: Path) -> None:
    stranger = unique_email("stranger")
    known = await _register_and_forget(mail_app)
    async with client_for(mail_app) as client:
        response = await client.post("/api/v1/auth/password/forgot", json={"email": stranger})
        assert response.status_code == 202
    await wait_for_mail(tmp_path, known, "reset")  # the worker has caught up meanwhile
    await asyncio.sleep(0.3)
    assert _messages_to(tmp_path, stranger) == []


async def _register_and_forget(app: FastAPI) -> str:
    async with client_for(app) as client:
        account = await register(client)
        await client.post("/api/v1/auth/password/forgot", json={"email": account.email})
    return account.email


async def test_a_replayed_refresh_token_mails_a_security_notice(
    mail_app: FastAPI, tmp_path: Path
) -> None:
    async with client_for(mail_app, headers={"User-Agent": "Stolen/1.0"}) as client:
        account = await register(client)
        await client.post("/api/v1/auth/refresh", json={"refreshToken": account.refresh_token})
        await age_refresh_rotation(mail_app, account.refresh_token, 11)  # past the grace
        replay = await client.post(
            "/api/v1/auth/refresh", json={"refreshToken": account.refresh_token}
        )
        assert replay.status_code == 401
    body = await wait_for_mail(tmp_path, account.email, "security")
    assert "Stolen/1.0" in body
    assert account.refresh_token not in body


async def test_turning_mfa_on_and_off_mails_a_security_notice_each_time(
    mail_app: FastAPI, tmp_path: Path
) -> None:
    import pyotp

    async with client_for(mail_app, headers={"User-Agent": "Laptop/2.0"}) as client:
        account = await register(client)
        setup = await client.post("/api/v1/auth/mfa/setup", headers=account.headers)
        secret = setup.json()["data"]["secret"]
        remember_secret(secret)
        totp = pyotp.TOTP(secret)
        enabled = await client.post(
            "/api/v1/auth/mfa/enable",
            json={"password": account.password, "code": totp.at(time.time() - 30)},
            headers=account.headers,
        )
        assert enabled.status_code == 200
        remember_secret(*enabled.json()["data"]["recoveryCodes"])
        on = await wait_for_mail(tmp_path, account.email, "turned on")
        assert "Laptop/2.0" in on
        assert secret not in on

        disabled = await client.post(
            "/api/v1/auth/mfa/disable",
            json={"password": account.password, "code": totp.now()},
            headers=account.headers,
        )
        assert disabled.status_code == 204
        await wait_for_mail(tmp_path, account.email, "turned off")


async def test_emailed_tokens_are_not_in_the_job_rows(mail_app: FastAPI, tmp_path: Path) -> None:
    from sqlalchemy import select

    from tenantry.core.jobs.models import Job

    async with client_for(mail_app) as http:
        account = await register(http)
    body = await wait_for_mail(tmp_path, account.email, "verify")
    token = token_from(body, "/verify-email")
    async with mail_app.state.database.session(write=False) as session:
        payloads = [repr(p) for p in await session.scalars(select(Job.payload))]
    assert not any(token in p or account.email in p for p in payloads)
