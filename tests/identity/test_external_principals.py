"""External principals take the same path as local ones: tenant gate, roles, plans, audit."""

from __future__ import annotations

import asyncio

import httpx
import jwt
from fastapi import FastAPI

from tests.factories import Account, add_member, create_org, deactivate, register, unique_email
from tests.identity.conftest import OidcProviders, bearer


async def external_account(
    client: httpx.AsyncClient, oidc: OidcProviders, **claims: object
) -> Account:
    token = await oidc.token(email=unique_email("ext"), email_verified=True, **claims)  # type: ignore[arg-type]
    response = await client.get("/api/v1/users/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    return Account("", "", response.json()["data"], token, "")


def _subject_of(account: Account) -> str:
    return str(jwt.decode(account.access_token, options={"verify_signature": False})["sub"])


async def test_an_external_user_owns_an_organization_and_is_the_audited_actor(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    owner = await external_account(ext_client, oidc, alg="ES256")
    org = await create_org(ext_client, owner)
    created = await ext_client.post(
        f"{org.path}/projects", json={"name": "From Clerk"}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    entries = await ext_client.get(
        f"{org.path}/audit-logs",
        params={"entityId": created.json()["data"]["id"]},
        headers=owner.headers,
    )
    assert entries.status_code == 200, entries.text
    assert [e["actorUserId"] for e in entries.json()["data"]] == [owner.id]


async def test_an_external_user_is_refused_by_organizations_it_is_not_a_member_of(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    org = await create_org(ext_client, await register(ext_client))
    outsider = await external_account(ext_client, oidc)
    response = await ext_client.get(f"{org.path}/projects", headers=outsider.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_an_external_member_has_its_roles_permissions(
    ext_app: FastAPI, ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    org = await create_org(ext_client, await register(ext_client))
    viewer = await external_account(ext_client, oidc)
    await add_member(ext_app, ext_client, org, "viewer", account=viewer)
    assert (await ext_client.get(f"{org.path}/projects", headers=viewer.headers)).status_code == 200
    denied = await ext_client.post(
        f"{org.path}/projects", json={"name": "Nope"}, headers=viewer.headers
    )
    assert denied.status_code == 403
    assert denied.json()["code"] == "forbidden"


async def test_a_deactivated_external_member_is_refused_by_the_tenant_gate(
    ext_app: FastAPI, ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    owner = await external_account(ext_client, oidc)
    org = await create_org(ext_client, owner)
    assert (await ext_client.get(f"{org.path}/projects", headers=owner.headers)).status_code == 200
    await deactivate(ext_app, ext_client, owner)
    # The token from before, and a fresh one the provider issued after the deactivation.
    fresh = await oidc.token(sub=_subject_of(owner), iat_offset=5)
    for token in (owner.access_token, fresh):
        response = await ext_client.get(f"{org.path}/projects", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"


async def test_logout_all_refuses_the_provider_tokens_issued_before_it(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    user = await external_account(ext_client, oidc, iat_offset=-30)
    org = await create_org(ext_client, user)
    logout = await ext_client.post("/api/v1/auth/logout-all", headers=user.headers)
    assert logout.status_code == 204
    for path in ("/api/v1/users/me", f"{org.path}/projects"):  # own routes, tenant gate
        response = await ext_client.get(path, headers=user.headers)
        assert response.status_code == 401, path


async def test_an_account_without_a_local_password_erases_itself_with_its_provider_token(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    user = await external_account(ext_client, oidc)
    response = await ext_client.request("DELETE", "/api/v1/users/me", json={}, headers=user.headers)
    assert response.status_code == 204, response.text
    assert (await ext_client.get("/api/v1/users/me", headers=user.headers)).status_code == 401


async def test_an_account_with_a_local_password_still_needs_it_to_erase_itself(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    local = await register(ext_client)
    token = await oidc.token(email=local.email, email_verified=True)
    for body, status in [({}, 400), ({"password": "not the password"}, 401)]:
        response = await ext_client.request(
            "DELETE", "/api/v1/users/me", json=body, headers=bearer(token)
        )
        assert response.status_code == status, response.text
    assert (await ext_client.get("/api/v1/users/me", headers=bearer(token))).status_code == 200
    missing = await ext_client.request("DELETE", "/api/v1/users/me", json={}, headers=local.headers)
    assert missing.status_code == 400


async def test_concurrent_first_requests_of_a_subject_make_one_user(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    for verified in (True, False):
        token = await oidc.token(email=unique_email("race"), email_verified=verified)
        responses = await asyncio.gather(
            *(ext_client.get("/api/v1/users/me", headers=bearer(token)) for _ in range(6))
        )
        assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
        assert len({r.json()["data"]["id"] for r in responses}) == 1
