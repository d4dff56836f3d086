"""Invitations: emailed link, single use, 7-day expiry, verified email must match, role kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.orgs.models import Invitation
from tests.conftest import client_for
from tests.factories import (
    Account,
    Org,
    add_member,
    create_org,
    mark_email_verified,
    register,
    remember_secret,
    unique_email,
)

TOKEN = re.compile(r"accept-invitation\?token=([0-9a-f]{32}\.[A-Za-z0-9_\-]+)")


@pytest.fixture
async def mail_app(build_app, tmp_path: Path) -> FastAPI:  # type: ignore[no-untyped-def]
    app: FastAPI = await build_app(
        var_dir=tmp_path,
        jobs_embedded_worker=True,
        jobs_poll_seconds=0.05,
        rate_limit_enabled=False,
    )
    return app


@pytest.fixture
async def http(mail_app: FastAPI) -> httpx.AsyncClient:  # type: ignore[misc]
    async with client_for(mail_app) as client:
        yield client


async def emailed_token(tmp_path: Path, to: str, within: float = 10) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for path in sorted((tmp_path / "mail").glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == to:
                body = message.get_body(preferencelist=("plain",))
                assert body is not None
                found = TOKEN.search(body.get_content())
                assert found, body.get_content()
                remember_secret(found.group(1))
                return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no invitation mailed to {to}")


async def invite(
    http: httpx.AsyncClient, org: Org, to: str, role: str = "member"
) -> dict[str, object]:
    response = await http.post(
        f"{org.path}/invitations", json={"email": to, "role": role}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    return data


async def verified(app: FastAPI, http: httpx.AsyncClient, email_address: str) -> Account:
    account = await register(http, email=email_address)
    await mark_email_verified(app, account)
    return account


async def accept(http: httpx.AsyncClient, account: Account, token: str) -> httpx.Response:
    return await http.post(
        "/api/v1/invitations/accept", json={"token": token}, headers=account.headers
    )


async def test_invitee_joins_with_the_invitations_role_once(
    mail_app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = await create_org(http, await register(http))
    to = unique_email("invitee")
    await invite(http, org, to, "manager")
    token = await emailed_token(tmp_path, to)
    invitee = await verified(mail_app, http, to)
    response = await accept(http, invitee, token)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["role"] == "manager"
    assert (await http.get(org.path, headers=invitee.headers)).json()["data"]["myRole"] == "manager"
    again = await accept(http, invitee, token)
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


async def test_the_email_must_match_and_be_verified(
    mail_app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = await create_org(http, await register(http))
    to = unique_email("invitee")
    await invite(http, org, to)
    token = await emailed_token(tmp_path, to)
    someone_else = await verified(mail_app, http, unique_email("other"))
    assert (await accept(http, someone_else, token)).status_code == 403
    unverified = await register(http, email=to)
    assert (await accept(http, unverified, token)).status_code == 403
    await mark_email_verified(mail_app, unverified)
    assert (await accept(http, unverified, token)).status_code == 200  # not used up by refusals


async def test_expired_revoked_and_unknown_tokens_are_invalid(
    mail_app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = await create_org(http, await register(http))
    expired_to, revoked_to = unique_email("exp"), unique_email("rev")
    expired = await invite(http, org, expired_to)
    revoked = await invite(http, org, revoked_to)
    expired_token = await emailed_token(tmp_path, expired_to)
    revoked_token = await emailed_token(tmp_path, revoked_to)
    async with mail_app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=uuid.UUID(org.id)))
        await session.execute(
            update(Invitation)
            .where(Invitation.id == uuid.UUID(str(expired["id"])))
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    gone = await http.delete(f"{org.path}/invitations/{revoked['id']}", headers=org.owner.headers)
    assert gone.status_code == 204
    for to, token in ((expired_to, expired_token), (revoked_to, revoked_token)):
        account = await verified(mail_app, http, to)
        response = await accept(http, account, token)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_token")
    stranger = await verified(mail_app, http, unique_email("s"))
    for bogus in ("nonsense", f"{uuid.uuid4().hex}.abc", f"{org.id.replace('-', '')}.abc"):
        response = await accept(http, stranger, bogus)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_token")


async def test_invitation_expires_after_seven_days(http: httpx.AsyncClient) -> None:
    org = await create_org(http, await register(http))
    data = await invite(http, org, unique_email("week"))
    expires = dt.datetime.fromisoformat(str(data["expiresAt"]).replace("Z", "+00:00"))
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    assert abs(expires - expected) < dt.timedelta(minutes=1)


async def test_inviting_an_existing_member_is_409(
    mail_app: FastAPI, http: httpx.AsyncClient
) -> None:
    org = await create_org(http, await register(http))
    member = await add_member(mail_app, http, org, "viewer")
    response = await http.post(
        f"{org.path}/invitations",
        json={"email": member.email, "role": "member"},
        headers=org.owner.headers,
    )
    assert response.status_code == 409


async def test_nobody_invites_to_a_role_they_cannot_grant(
    mail_app: FastAPI, http: httpx.AsyncClient
) -> None:
    org = await create_org(http, await register(http))
    admin = await add_member(mail_app, http, org, "admin")
    response = await http.post(
        f"{org.path}/invitations",
        json={"email": unique_email("x"), "role": "owner"},
        headers=admin.headers,
    )
    assert response.status_code == 403


async def test_list_shows_pending_invitations_without_tokens(
    http: httpx.AsyncClient,
) -> None:
    org = await create_org(http, await register(http))
    to = unique_email("listed")
    await invite(http, org, to, "viewer")
    response = await http.get(f"{org.path}/invitations", headers=org.owner.headers)
    rows = response.json()["data"]
    assert [(r["email"], r["role"], r["status"]) for r in rows] == [(to, "viewer", "pending")]
    assert "token" not in response.text.lower()


async def test_accepting_when_already_a_member_is_409(
    mail_app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = await create_org(http, await register(http))
    to = unique_email("twice")
    await invite(http, org, to, "viewer")
    token = await emailed_token(tmp_path, to)
    account = await verified(mail_app, http, to)
    await add_member(mail_app, http, org, "member", account=account)
    response = await accept(http, account, token)
    assert response.status_code == 409
