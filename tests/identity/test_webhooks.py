"""Provider webhooks: Clerk's Svix signatures and the generic HMAC scheme, replays refused."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from svix.webhooks import Webhook

from tenantry.modules.identity.webhooks import hmac_signature
from tenantry.modules.users.models import User
from tests.factories import add_member, create_org, unique_email
from tests.identity.conftest import HMAC_SECRET, SVIX_SECRET, OidcProviders, bearer

ALPHA = "/api/v1/auth/providers/alpha/webhook"
BETA = "/api/v1/auth/providers/beta/webhook"


def svix_headers(body: bytes, *, message_id: str | None = None, age: float = 0) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    signature = Webhook(SVIX_SECRET).sign(message_id, at, body.decode())
    return {
        "svix-id": message_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


def hmac_headers(body: bytes, *, message_id: str | None = None, age: float = 0) -> dict[str, str]:
    message_id = message_id or f"evt_{uuid.uuid4().hex}"
    timestamp = str(int(time.time() - age))
    signature = hmac_signature(HMAC_SECRET, message_id, timestamp, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"sha256={signature}",
        "content-type": "application/json",
    }


def clerk_event(kind: str, subject: str, **data: Any) -> bytes:
    return json.dumps({"type": kind, "object": "event", "data": {"id": subject, **data}}).encode()


async def signed_in(
    client: httpx.AsyncClient, oidc: OidcProviders, provider: str = "alpha"
) -> tuple[str, str, dict[str, Any]]:
    subject = f"user_{uuid.uuid4().hex[:20]}"
    token = await oidc.token(provider, sub=subject, email=unique_email("ext"), email_verified=True)
    response = await client.get("/api/v1/users/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return subject, token, response.json()["data"]


async def test_clerk_user_updated_syncs_email_and_names(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    subject, token, _ = await signed_in(ext_client, oidc)
    new_email = unique_email("renamed")
    body = clerk_event(
        "user.updated",
        subject,
        first_name="Grace",
        last_name="Hopper",
        primary_email_address_id="idn_1",
        email_addresses=[
            {"id": "idn_0", "email_address": unique_email("old"), "verification": None},
            {"id": "idn_1", "email_address": new_email, "verification": {"status": "verified"}},
        ],
    )
    response = await ext_client.post(ALPHA, content=body, headers=svix_headers(body))
    assert response.status_code == 204, response.text
    user = (await ext_client.get("/api/v1/users/me", headers=bearer(token))).json()["data"]
    assert (user["email"], user["emailVerified"]) == (new_email, True)
    assert (user["firstName"], user["lastName"]) == ("Grace", "Hopper")


async def test_clerk_user_deleted_erases_the_linked_account(
    ext_app: FastAPI, ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    subject, token, user = await signed_in(ext_client, oidc)
    org = await create_org(ext_client, _account(user, token))
    body = clerk_event("user.deleted", subject, deleted=True, object="user")
    response = await ext_client.post(ALPHA, content=body, headers=svix_headers(body))
    assert response.status_code == 204, response.text
    # The path of DELETE /users/me: personal data gone, sole-member organization deleted,
    # and the provider's tokens, old or new, no longer sign anyone in.
    async with ext_app.state.database.session() as session:
        row = await session.get(User, uuid.UUID(user["id"]))
        assert row is not None
        assert row.email.startswith("erased-")
        assert row.deleted_at is not None
    assert (await ext_client.get("/api/v1/users/me", headers=bearer(token))).status_code == 401
    fresh = await oidc.token(sub=subject, email=user["email"], email_verified=True, iat_offset=5)
    assert (await ext_client.get("/api/v1/users/me", headers=bearer(fresh))).status_code == 401
    assert (await ext_client.get(org.path, headers=bearer(fresh))).status_code == 401
    again = await ext_client.post(ALPHA, content=body, headers=svix_headers(body))
    assert again.status_code == 204  # already erased: acknowledged, nothing to do


def _account(user: dict[str, Any], token: str) -> Any:
    from tests.factories import Account

    return Account("", "", user, token, "")


async def test_a_replayed_svix_message_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    subject, _, _ = await signed_in(ext_client, oidc)
    body = clerk_event("user.updated", subject, first_name="Once")
    headers = svix_headers(body)
    assert (await ext_client.post(ALPHA, content=body, headers=headers)).status_code == 204
    replay = await ext_client.post(ALPHA, content=body, headers=headers)
    assert replay.status_code == 401
    assert replay.json()["code"] == "unauthorized"


async def test_bad_or_stale_svix_signatures_are_refused_and_change_nothing(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    subject, token, _ = await signed_in(ext_client, oidc)
    body = clerk_event("user.updated", subject, first_name="Mallory")
    tampered = clerk_event("user.updated", subject, first_name="Mallory!")
    for content, headers in [
        (tampered, svix_headers(body)),  # the signature of another body
        (body, svix_headers(body, age=600)),  # signed ten minutes ago
        (body, {**svix_headers(body), "svix-signature": "v1,AAAA"}),
        (body, {"content-type": "application/json"}),
        (body, hmac_headers(body)),  # the other scheme
    ]:
        response = await ext_client.post(ALPHA, content=content, headers=headers)
        assert response.status_code == 401, response.text
    user = (await ext_client.get("/api/v1/users/me", headers=bearer(token))).json()["data"]
    assert user["firstName"] != "Mallory"


async def test_the_generic_hmac_scheme_is_verified_and_replays_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    subject, token, _ = await signed_in(ext_client, oidc, "beta")
    body = json.dumps(
        {"type": "user.updated", "data": {"sub": subject, "first_name": "Linus"}}
    ).encode()
    headers = hmac_headers(body)
    for content, sent in [
        (body.replace(b"Linus", b"Eve"), headers),
        (body, hmac_headers(body, age=3600)),
        (body, {**headers, "webhook-signature": "sha256=" + "0" * 64}),
        (body, svix_headers(body)),
    ]:
        assert (await ext_client.post(BETA, content=content, headers=sent)).status_code == 401
    assert (await ext_client.post(BETA, content=body, headers=headers)).status_code == 204
    assert (await ext_client.post(BETA, content=body, headers=headers)).status_code == 401
    user = (await ext_client.get("/api/v1/users/me", headers=bearer(token))).json()["data"]
    assert user["firstName"] == "Linus"


async def test_webhooks_of_unknown_providers_are_not_found(ext_client: httpx.AsyncClient) -> None:
    body = clerk_event("user.deleted", "user_x")
    for name in ("nobody", "rogue"):
        response = await ext_client.post(
            f"/api/v1/auth/providers/{name}/webhook", content=body, headers=svix_headers(body)
        )
        assert response.status_code == 404


async def test_an_event_for_a_subject_never_seen_is_acknowledged(
    ext_client: httpx.AsyncClient,
) -> None:
    body = clerk_event("user.deleted", f"user_{uuid.uuid4().hex}")
    assert (
        await ext_client.post(ALPHA, content=body, headers=svix_headers(body))
    ).status_code == 204


async def test_a_delivery_that_failed_can_be_retried_with_the_same_message_id(
    ext_app: FastAPI, ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    """The last owner of a shared organization is not erased (409); Clerk retries the same
    message once ownership moved, and that retry is not a replay."""
    subject, token, user = await signed_in(ext_client, oidc)
    org = await create_org(ext_client, _account(user, token))
    other = await add_member(ext_app, ext_client, org, "member")
    body = clerk_event("user.deleted", subject, deleted=True)
    headers = svix_headers(body)
    refused = await ext_client.post(ALPHA, content=body, headers=headers)
    assert refused.status_code == 409, refused.text
    assert (await ext_client.get("/api/v1/users/me", headers=bearer(token))).status_code == 200
    moved = await ext_client.patch(
        f"{org.path}/members/{other.id}", json={"role": "owner"}, headers=bearer(token)
    )
    assert moved.status_code == 200, moved.text
    retried = await ext_client.post(ALPHA, content=body, headers=headers)
    assert retried.status_code == 204, retried.text
    assert (await ext_client.get("/api/v1/users/me", headers=bearer(token))).status_code == 401
