"""The `members` limit on invitation accept, and accept under an expired trial."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
from fastapi import FastAPI

from tenantry.core.db import utcnow
from tenantry.modules.users.models import PlatformRole
from tests.factories import create_account, create_org, register, unique_email
from tests.orgs.test_invitations import accept, emailed_token, http, invite, mail_app, verified
from tests.plans.conftest import end_trial_at
from tests.tenant_helpers import Org, Tenants

__all__ = ["http", "mail_app"]


async def _org(mail_app: FastAPI, http: httpx.AsyncClient) -> Org:
    tenants = Tenants(mail_app, http)
    return Org(tenants, await create_org(http, await register(http)))


async def test_accept_beyond_the_members_limit_is_402_and_adds_no_one(
    mail_app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = await _org(mail_app, http)
    admin = await create_account(mail_app, http, role=PlatformRole.ADMIN)
    set_limit = await http.put(
        f"/api/v1/admin/orgs/{org.id}/subscription",
        json={"plan": "pro", "status": "active", "overrides": {"limits": {"members": 2}}},
        headers=admin.headers,
    )
    assert set_limit.status_code == 200, set_limit.text
    first_to, second_to = unique_email("first"), unique_email("second")
    await invite(http, org.org, first_to)
    await invite(http, org.org, second_to)
    first = await verified(mail_app, http, first_to)
    assert (await accept(http, first, await emailed_token(tmp_path, first_to))).status_code == 200
    second = await verified(mail_app, http, second_to)
    refused = await accept(http, second, await emailed_token(tmp_path, second_to))
    assert refused.status_code == 402
    assert refused.json()["code"] == "plan_limit_reached"
    assert refused.json()["details"]["limit"] == 2
    assert refused.json()["details"]["used"] == 2
    members = await http.get(org.url("/members"), headers=org.owner.headers)
    assert len(members.json()["data"]) == 2


async def test_accept_into_an_expired_trial_is_402(
    mail_app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    org = await _org(mail_app, http)
    to = unique_email("late")
    await invite(http, org.org, to)
    token = await emailed_token(tmp_path, to)
    await end_trial_at(mail_app, org, utcnow() - dt.timedelta(minutes=1))
    late = await verified(mail_app, http, to)
    refused = await accept(http, late, token)
    assert refused.status_code == 402
    assert refused.json()["code"] == "trial_expired"


async def test_an_api_key_cannot_write_under_an_expired_trial_but_still_reads(
    tenants: Tenants,
) -> None:
    org = await tenants.org()
    headers = await org.key(["projects:read", "projects:write"])
    await end_trial_at(tenants.app, org, utcnow() - dt.timedelta(minutes=1))
    assert (await tenants.client.get(org.url("/projects"), headers=headers)).status_code == 200
    response = await tenants.client.post(org.url("/projects"), json={"name": "k"}, headers=headers)
    assert response.status_code == 402
