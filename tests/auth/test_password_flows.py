"""Forgot/reset/change password and email verification (API.md: Auth, password flows).

Here the mailed token is created through the same service function the route uses, so
these tests need no worker; `test_emailed_flows.py` reads the delivered emails instead.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, select, update

from tenantry.core.jobs import Worker
from tenantry.modules.auth.models import OneTimeToken, TokenPurpose
from tenantry.modules.auth.service import (
    PASSWORD_RESET_REQUEST,
    issue_email_verification_token,
    issue_password_reset_token,
)
from tests.factories import Account, login, remember_secret, unique_email

ME = "/api/v1/users/me"
FORGOT = "/api/v1/auth/password/forgot"
RESET = "/api/v1/auth/password/reset"
CHANGE = "/api/v1/auth/password/change"
NEW_PASSWORD = "a brand new passphrase"
remember_secret(NEW_PASSWORD)


async def _reset_token(app: FastAPI, account: Account) -> str:
    async with app.state.database.transaction() as session:
        token = await issue_password_reset_token(session, app.state.settings, uuid.UUID(account.id))
    remember_secret(token)
    return token


async def _verification_token(app: FastAPI, account: Account) -> str:
    async with app.state.database.transaction() as session:
        token = await issue_email_verification_token(
            session, app.state.settings, uuid.UUID(account.id)
        )
    remember_secret(token)
    return token


async def _count_tokens(app: FastAPI, account: Account, purpose: TokenPurpose) -> int:
    async with app.state.database.transaction() as session:
        rows = await session.scalars(
            select(OneTimeToken.id).where(
                OneTimeToken.user_id == uuid.UUID(account.id),
                OneTimeToken.purpose == purpose.value,
            )
        )
        return len(list(rows))


async def _run_reset_jobs(app: FastAPI) -> None:
    worker = Worker(app.state.database, app.state.settings, job_types={PASSWORD_RESET_REQUEST})
    await worker.drain(within_seconds=30)


async def test_forgot_answers_202_alike_for_known_and_unknown_emails(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    known = await client.post(FORGOT, json={"email": account.email})
    unknown = await client.post(FORGOT, json={"email": unique_email()})
    for response in (known, unknown):
        assert response.status_code == 202
        assert set(response.json()["data"]) == {"jobId", "status"}
        assert response.json()["data"]["status"] == "queued"
    await _run_reset_jobs(app)
    assert await _count_tokens(app, account, TokenPurpose.PASSWORD_RESET) == 1


@contextmanager
def recorded_sql(app: FastAPI) -> Iterator[list[str]]:
    """Every SQL statement the app's engine sends while the block runs."""
    engine = app.state.database.engine.sync_engine
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_forgot_does_the_same_work_for_known_and_unknown_emails(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    """Same statements, same answer: nothing (not even the time) tells an account exists."""
    await client.post(FORGOT, json={"email": unique_email()})  # warm-up (first-use caches)
    answers, work = [], []
    for email in (account.email, unique_email()):
        with recorded_sql(app) as statements:
            response = await client.post(FORGOT, json={"email": email})
        answers.append(
            (
                response.status_code,
                sorted(response.headers.keys()),
                sorted(response.json()),
                sorted(response.json()["data"]),
                response.json()["data"]["status"],
            )
        )
        work.append(statements)
    assert answers[0] == answers[1]
    assert work[0] == work[1]
    assert work[0]  # the job row was written in the request, for both


async def test_reset_token_works_once_and_revokes_all_sessions(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    token = await _reset_token(app, account)
    response = await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 204

    assert (await client.get(ME, headers=account.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refreshToken": account.refresh_token}
    )
    assert refreshed.status_code == 401
    old = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": account.password}
    )
    assert old.status_code == 401
    await login(client, account.email, NEW_PASSWORD)

    again = await client.post(RESET, json={"token": token, "password": "yet another one!"})
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


async def test_an_expired_or_unknown_reset_token_is_invalid_token(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    token = await _reset_token(app, account)
    async with app.state.database.transaction() as session:
        await session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.user_id == uuid.UUID(account.id))
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    for candidate in (token, "made-up-token"):
        response = await client.post(RESET, json={"token": candidate, "password": NEW_PASSWORD})
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_token"
    await login(client, account.email, account.password)


async def test_a_verification_token_cannot_reset_a_password(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    token = await _verification_token(app, account)
    response = await client.post(RESET, json={"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 400


async def test_change_password_needs_the_current_one_and_ends_other_sessions(
    client: httpx.AsyncClient, account: Account
) -> None:
    other = await login(client, account.email)
    wrong = await client.post(
        CHANGE,
        json={"currentPassword": "not my password", "newPassword": NEW_PASSWORD},
        headers=account.headers,
    )
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_credentials"
    assert (await client.get(ME, headers=other.headers)).status_code == 200

    response = await client.post(
        CHANGE,
        json={"currentPassword": account.password, "newPassword": NEW_PASSWORD},
        headers=account.headers,
    )
    assert response.status_code == 204
    assert (await client.get(ME, headers=account.headers)).status_code == 200
    assert (await client.get(ME, headers=other.headers)).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refreshToken": other.refresh_token}
    )
    assert refreshed.status_code == 401
    await login(client, account.email, NEW_PASSWORD)


async def test_change_password_enforces_the_length_rule(
    client: httpx.AsyncClient, account: Account
) -> None:
    response = await client.post(
        CHANGE,
        json={"currentPassword": account.password, "newPassword": "short"},
        headers=account.headers,
    )
    assert response.status_code == 400
    assert "short" not in response.text


async def test_register_issues_a_verification_token_and_verify_marks_the_email(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    assert account.user["emailVerified"] is False
    assert await _count_tokens(app, account, TokenPurpose.EMAIL_VERIFICATION) == 1
    token = await _verification_token(app, account)

    response = await client.post("/api/v1/auth/email/verify", json={"token": token})
    assert response.status_code == 200
    assert response.json()["data"]["emailVerified"] is True
    assert (await client.get(ME, headers=account.headers)).json()["data"]["emailVerified"]

    again = await client.post("/api/v1/auth/email/verify", json={"token": token})
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


async def test_resend_verification_issues_a_new_token_until_verified(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    response = await client.post("/api/v1/auth/email/resend", headers=account.headers)
    assert response.status_code == 202
    assert await _count_tokens(app, account, TokenPurpose.EMAIL_VERIFICATION) == 2

    token = await _verification_token(app, account)
    await client.post("/api/v1/auth/email/verify", json={"token": token})
    done = await client.post("/api/v1/auth/email/resend", headers=account.headers)
    assert done.status_code == 409
    assert (await client.post("/api/v1/auth/email/resend")).status_code == 401


async def test_a_password_change_voids_every_outstanding_reset_token(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    token = await _reset_token(app, account)
    changed = await client.post(
        CHANGE,
        json={"currentPassword": account.password, "newPassword": NEW_PASSWORD},
        headers=account.headers,
    )
    assert changed.status_code == 204

    stale = await client.post(RESET, json={"token": token, "password": "an attacker's choice"})
    assert stale.status_code == 400
    assert stale.json()["code"] == "invalid_token"
    await login(client, account.email, NEW_PASSWORD)


async def test_a_reset_voids_the_other_outstanding_reset_tokens(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    first, second = await _reset_token(app, account), await _reset_token(app, account)
    reset = await client.post(RESET, json={"token": first, "password": NEW_PASSWORD})
    assert reset.status_code == 204

    other = await client.post(RESET, json={"token": second, "password": "an attacker's choice"})
    assert other.status_code == 400
    assert other.json()["code"] == "invalid_token"
    await login(client, account.email, NEW_PASSWORD)
    # A link requested after the reset is a new one and works.
    fresh = await _reset_token(app, account)
    assert (
        await client.post(RESET, json={"token": fresh, "password": "yet another passphrase"})
    ).status_code == 204
