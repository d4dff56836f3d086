"""Invitations are capped per organization per hour, and a name cannot inject mail headers."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from tenantry.config import SettingsError, load_settings
from tenantry.core.jobs import store
from tenantry.core.jobs.execution import JobExecutor
from tenantry.core.jobs.models import Job
from tenantry.core.mail.outbox import JOB_TYPE as MAIL_JOB
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.orgs.models import Invitation, Organization
from tests.conftest import client_for
from tests.factories import Org, create_org, register, unique_email

CAP = 3


async def _invite(app: FastAPI, org: Org, to: str | None = None) -> httpx.Response:
    async with client_for(app) as http:
        return await http.post(
            f"{org.path}/invitations",
            json={"email": to or unique_email("capped"), "role": "member"},
            headers=org.owner.headers,
        )


async def _sent(app: FastAPI, org: Org) -> tuple[int, int]:
    """(invitations, invitation mail jobs) stored for `org`."""
    org_id = uuid.UUID(org.id)
    async with app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org_id))
        invitations = await session.scalar(select(func.count()).select_from(Invitation))
        mails = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.type == MAIL_JOB, Job.organization_id == org_id)
        )
    return int(invitations or 0), int(mails or 0)


@pytest.fixture
async def capped(build_app: Callable[..., Any]) -> tuple[FastAPI, FastAPI]:
    """Two apps on the same database, as two API processes (each its own memory)."""
    first = await build_app(invitations_per_org_per_hour=CAP)
    second = await build_app(invitations_per_org_per_hour=CAP)
    return first, second


async def test_an_organization_sends_at_most_the_hourly_cap_across_processes(
    app: FastAPI, client: httpx.AsyncClient, capped: tuple[FastAPI, FastAPI]
) -> None:
    first, second = capped
    org = await create_org(client, await register(client))
    statuses = [
        (await _invite(first, org)).status_code,
        (await _invite(second, org)).status_code,
        (await _invite(first, org)).status_code,
    ]
    assert statuses == [201, 201, 201]
    for process in (first, second):
        refused = await _invite(process, org)
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert (body["success"], body["code"]) == (False, "rate_limited")
        assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert await _sent(app, org) == (CAP, CAP)  # the refused ones stored and mailed nothing
    other = await create_org(client, await register(client))
    assert (await _invite(first, other)).status_code == 201  # per organization


async def test_the_window_rolls_and_retry_after_says_when(
    app: FastAPI, client: httpx.AsyncClient, capped: tuple[FastAPI, FastAPI]
) -> None:
    first, _ = capped
    org = await create_org(client, await register(client))
    ids = []
    for _ in range(CAP):
        response = await _invite(first, org)
        assert response.status_code == 201
        ids.append(uuid.UUID(response.json()["data"]["id"]))
    now = dt.datetime.now(dt.UTC)
    async with app.state.database.transaction() as session:  # the oldest: 50 minutes ago
        bind_tenant(session, TenantContext(organization_id=uuid.UUID(org.id)))
        await session.execute(
            update(Invitation)
            .where(Invitation.id == ids[0])
            .values(created_at=now - dt.timedelta(minutes=50))
        )
    refused = await _invite(first, org)
    assert refused.status_code == 429
    assert 590 <= int(refused.headers["Retry-After"]) <= 600  # when the oldest ages out
    async with app.state.database.transaction() as session:  # ... and now it has
        bind_tenant(session, TenantContext(organization_id=uuid.UUID(org.id)))
        await session.execute(
            update(Invitation)
            .where(Invitation.id == ids[0])
            .values(created_at=now - dt.timedelta(minutes=61))
        )
    assert (await _invite(first, org)).status_code == 201
    assert (await _invite(first, org)).status_code == 429


async def test_concurrent_invitations_do_not_overshoot_the_cap(
    app: FastAPI, client: httpx.AsyncClient, capped: tuple[FastAPI, FastAPI]
) -> None:
    first, second = capped
    org = await create_org(client, await register(client))
    responses = await asyncio.gather(*(_invite(first if n % 2 else second, org) for n in range(8)))
    assert sorted(r.status_code for r in responses) == [201] * CAP + [429] * (8 - CAP)
    assert await _sent(app, org) == (CAP, CAP)


def test_the_cap_defaults_to_fifty_and_must_be_positive() -> None:
    assert load_settings(_env_file=None).invitations_per_org_per_hour == 50
    with pytest.raises(SettingsError, match="INVITATIONS_PER_ORG_PER_HOUR"):
        load_settings(_env_file=None, invitations_per_org_per_hour=0)


# -- header injection -----------------------------------------------------------------------

INJECTED = "Acme\r\nBcc: attacker@x"


async def test_an_organization_name_with_line_breaks_or_controls_is_refused(
    client: httpx.AsyncClient,
) -> None:
    owner = await register(client)
    for name in (INJECTED, "Acme\nInc", "Acme\x1b[31m", "Acme\u2028Bcc: x", "Acme\u202egro"):
        created = await client.post("/api/v1/orgs", json={"name": name}, headers=owner.headers)
        assert created.status_code == 400, name
        body = created.json()
        assert body["code"] == "validation_error"
        assert body["details"][0]["field"] == "name"
    org = await create_org(client, owner, name="Acme & Söhne — Ünïcode ok")
    renamed = await client.patch(org.path, json={"name": INJECTED}, headers=owner.headers)
    assert renamed.status_code == 400
    assert (await client.get(org.path, headers=owner.headers)).json()["data"]["name"] == org.name


async def test_a_stored_name_with_cr_lf_cannot_break_the_invitation_subject(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    org = await create_org(client, await register(client))
    # A name stored before names were validated (or written by other means).
    legacy = INJECTED + "\x07\x1b\u202e"
    async with app.state.database.transaction() as session:
        await session.execute(
            update(Organization).where(Organization.id == uuid.UUID(org.id)).values(name=legacy)
        )
    to = unique_email("subject")
    response = await client.post(
        f"{org.path}/invitations", json={"email": to, "role": "member"}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    message = await _send_invitation_mail(app, org)
    assert message["To"] == to
    assert message["Bcc"] is None
    assert "attacker@x" not in str(message.get_all("To")) + str(message["Cc"])
    subject = message["Subject"]
    assert subject.endswith("invited you to Acme Bcc: attacker@x on tenantry"), subject
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in subject)
    assert "\u202e" not in subject


async def _send_invitation_mail(app: FastAPI, org: Org) -> email.message.EmailMessage:
    """Run the org's queued `mail.send` job through the real handler and file mailer."""
    database = app.state.database
    settings = app.state.settings
    async with database.session(write=False) as session:
        job_id = await session.scalar(
            select(Job.id).where(Job.type == MAIL_JOB, Job.organization_id == uuid.UUID(org.id))
        )
    assert job_id is not None
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    job = await store.claim_by_id(database, job_id, "test", now=now, lease=30)
    assert job is not None
    await JobExecutor(database, settings, lambda: now).run(job)
    assert (await _status(app, job_id)) == "succeeded"
    mail_dir = Path(settings.effective_mail_url.removeprefix("file://"))
    for path in sorted(mail_dir.glob("*.eml"), reverse=True):
        raw = path.read_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        if "invited you to Acme" in str(parsed["Subject"]):
            headers = raw.split(b"\n\n", 1)[0]
            assert b"\nBcc:" not in headers
            assert b"\r\nBcc:" not in headers
            assert isinstance(parsed, email.message.EmailMessage)
            return parsed
    raise AssertionError("no invitation mail written")


async def _status(app: FastAPI, job_id: uuid.UUID) -> str:
    async with app.state.database.session(write=False) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job.status
