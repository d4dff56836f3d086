"""Invitations: emailed link, single use, 7-day expiry, verified email must match, role kept."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from tenantry.core.jobs.models import Job
from tenantry.core.mail.outbox import JOB_TYPE as MAIL_JOB
from tenantry.core.mail.outbox import PayloadSeal
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.orgs.models import Invitation
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


async def emailed_token(app: FastAPI, org: Org, to: str) -> str:
    """The accept link of the invitation email queued for `to` (read from its mail job).

    The payload is sealed (core/mail/outbox.py); opening it here checks what the worker
    would send without running one.
    """
    seal = PayloadSeal(app.state.settings.secret())
    async with app.state.database.transaction() as session:
        jobs = await session.scalars(
            select(Job)
            .where(Job.type == MAIL_JOB, Job.organization_id == uuid.UUID(org.id))
            .order_by(Job.created_at.desc())
        )
        for job in jobs:
            assert job.payload["template"] == "invitation"
            content = seal.open(job.payload["sealed"], template="invitation")
            if content["to"] == to:
                found = TOKEN.search(content["context"]["link"])
                assert found, content["context"]["link"]
                remember_secret(found.group(1))
                return found.group(1)
    raise AssertionError(f"no invitation queued for {to}")


async def invite(
    client: httpx.AsyncClient, org: Org, to: str, role: str = "member"
) -> dict[str, object]:
    response = await client.post(
        f"{org.path}/invitations", json={"email": to, "role": role}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    return data


async def verified(app: FastAPI, client: httpx.AsyncClient, email_address: str) -> Account:
    account = await register(client, email=email_address)
    await mark_email_verified(app, account)
    return account


async def accept(client: httpx.AsyncClient, account: Account, token: str) -> httpx.Response:
    return await client.post(
        "/api/v1/invitations/accept", json={"token": token}, headers=account.headers
    )


async def test_invitee_joins_with_the_invitations_role_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    to = unique_email("invitee")
    await invite(client, org, to, "manager")
    token = await emailed_token(app, org, to)
    invitee = await verified(app, client, to)
    response = await accept(client, invitee, token)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["role"] == "manager"
    assert (await client.get(org.path, headers=invitee.headers)).json()["data"][
        "myRole"
    ] == "manager"
    again = await accept(client, invitee, token)
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_token"


async def test_the_email_must_match_and_be_verified(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    to = unique_email("invitee")
    await invite(client, org, to)
    token = await emailed_token(app, org, to)
    someone_else = await verified(app, client, unique_email("other"))
    assert (await accept(client, someone_else, token)).status_code == 403
    unverified = await register(client, email=to)
    assert (await accept(client, unverified, token)).status_code == 403
    await mark_email_verified(app, unverified)
    assert (await accept(client, unverified, token)).status_code == 200  # not used up by refusals


async def test_expired_revoked_and_unknown_tokens_are_invalid(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    expired_to, revoked_to = unique_email("exp"), unique_email("rev")
    expired = await invite(client, org, expired_to)
    revoked = await invite(client, org, revoked_to)
    expired_token = await emailed_token(app, org, expired_to)
    revoked_token = await emailed_token(app, org, revoked_to)
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=uuid.UUID(org.id)))
        await session.execute(
            update(Invitation)
            .where(Invitation.id == uuid.UUID(str(expired["id"])))
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    gone = await client.delete(f"{org.path}/invitations/{revoked['id']}", headers=org.owner.headers)
    assert gone.status_code == 204
    for to, token in ((expired_to, expired_token), (revoked_to, revoked_token)):
        account = await verified(app, client, to)
        response = await accept(client, account, token)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_token")
    stranger = await verified(app, client, unique_email("s"))
    for bogus in ("nonsense", f"{uuid.uuid4().hex}.abc", f"{org.id.replace('-', '')}.abc"):
        response = await accept(client, stranger, bogus)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_token")


async def test_invitation_expires_after_seven_days(client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    data = await invite(client, org, unique_email("week"))
    expires = dt.datetime.fromisoformat(str(data["expiresAt"]).replace("Z", "+00:00"))
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    assert abs(expires - expected) < dt.timedelta(minutes=1)


async def test_inviting_an_existing_member_is_409(app: FastAPI, client: httpx.AsyncClient) -> None:
    org = await create_org(client, await register(client))
    member = await add_member(app, client, org, "viewer")
    response = await client.post(
        f"{org.path}/invitations",
        json={"email": member.email, "role": "member"},
        headers=org.owner.headers,
    )
    assert response.status_code == 409


async def test_nobody_invites_to_a_role_they_cannot_grant(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    admin = await add_member(app, client, org, "admin")
    response = await client.post(
        f"{org.path}/invitations",
        json={"email": unique_email("x"), "role": "owner"},
        headers=admin.headers,
    )
    assert response.status_code == 403


async def test_list_shows_pending_invitations_without_tokens(
    client: httpx.AsyncClient,
) -> None:
    org = await create_org(client, await register(client))
    to = unique_email("listed")
    await invite(client, org, to, "viewer")
    response = await client.get(f"{org.path}/invitations", headers=org.owner.headers)
    rows = response.json()["data"]
    assert [(r["email"], r["role"], r["status"]) for r in rows] == [(to, "viewer", "pending")]
    assert "token" not in response.text.lower()


async def test_accepting_when_already_a_member_is_409(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    to = unique_email("twice")
    await invite(client, org, to, "viewer")
    token = await emailed_token(app, org, to)
    account = await verified(app, client, to)
    await add_member(app, client, org, "member", account=account)
    response = await accept(client, account, token)
    assert response.status_code == 409
