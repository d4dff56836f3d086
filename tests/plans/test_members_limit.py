"""The `members` limit on invitation accept, and accept under an expired trial."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

import httpx
from sqlalchemy import update

from tenantry.core.db import utcnow
from tenantry.core.security import sha256_hex
from tenantry.core.tenancy import TenantContext, bind_tenant
from tenantry.modules.orgs.models import Invitation
from tests.factories import Account, mark_email_verified, register, remember_secret, unique_email
from tests.plans.conftest import end_trial_at, set_subscription
from tests.tenant_helpers import Org, Tenants


async def _invited(tenants: Tenants, org: Org) -> tuple[Account, str]:
    """A verified account and a token of an invitation for it (the emailed token is
    replaced by a known one: these tests are about the plan, not about email)."""
    to = unique_email("invitee")
    response = await tenants.client.post(
        org.url("/invitations"), json={"email": to, "role": "member"}, headers=org.owner.headers
    )
    assert response.status_code == 201, response.text
    token = f"{org.id.hex}.{secrets.token_urlsafe(32)}"
    remember_secret(token)
    async with tenants.app.state.database.transaction() as session:
        bind_tenant(session, TenantContext(organization_id=org.id))
        await session.execute(
            update(Invitation)
            .where(Invitation.id == uuid.UUID(response.json()["data"]["id"]))
            .values(token_hash=sha256_hex(token))
        )
    account = await register(tenants.client, email=to)
    await mark_email_verified(tenants.app, account)
    return account, token


async def _accept(client: httpx.AsyncClient, account: Account, token: str) -> httpx.Response:
    return await client.post(
        "/api/v1/invitations/accept", json={"token": token}, headers=account.headers
    )


async def test_accept_beyond_the_members_limit_is_402_and_adds_no_one(
    tenants: Tenants, admin: Account
) -> None:
    org = await tenants.org()
    await set_subscription(
        tenants, admin, org, plan="pro", status="active", overrides={"limits": {"members": 2}}
    )
    first, first_token = await _invited(tenants, org)
    second, second_token = await _invited(tenants, org)
    assert (await _accept(tenants.client, first, first_token)).status_code == 200
    refused = await _accept(tenants.client, second, second_token)
    assert refused.status_code == 402
    assert refused.json()["code"] == "plan_limit_reached"
    assert refused.json()["details"]["limit"] == 2
    assert refused.json()["details"]["used"] == 2
    members = await tenants.client.get(org.url("/members"), headers=org.owner.headers)
    assert len(members.json()["data"]) == 2


async def test_accept_into_an_expired_trial_is_402(tenants: Tenants) -> None:
    org = await tenants.org()
    late, token = await _invited(tenants, org)
    await end_trial_at(tenants.app, org, utcnow() - dt.timedelta(minutes=1))
    refused = await _accept(tenants.client, late, token)
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
