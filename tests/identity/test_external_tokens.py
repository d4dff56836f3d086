"""External issuers' tokens (API.md, "External identity providers"), from a real provider."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI

from tests.factories import Account, deactivate, register, soft_delete, unique_email
from tests.identity.conftest import OidcProviders, bearer


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/v1/users/me", headers=bearer(token))


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_a_provider_token_signs_in_its_user_created_just_in_time(
    ext_client: httpx.AsyncClient, oidc: OidcProviders, alg: str
) -> None:
    email = unique_email("ext")
    token = await oidc.token(
        sub=f"user_{alg}_{email}",
        email=email,
        email_verified=True,
        alg=alg,
        given_name="Ada",
        family_name="Lovelace",
    )
    first = await me(ext_client, token)
    assert first.status_code == 200, first.text
    user = first.json()["data"]
    assert (user["email"], user["emailVerified"]) == (email, True)
    assert (user["firstName"], user["lastName"]) == ("Ada", "Lovelace")
    again = await me(ext_client, token)
    assert again.json()["data"]["id"] == user["id"]


# --- what must be refused ------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload)), signature


def _join(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    encoded = [_b64(json.dumps(part).encode()) for part in (header, payload)]
    return ".".join([*encoded, signature])


async def _public_pem(oidc: OidcProviders, kid: str) -> bytes:
    jwk = next(k for k in await oidc.jwks("alpha") if k["kid"] == kid)
    key = jwt.PyJWK(jwk).key
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)  # type: ignore[no-any-return]


async def assert_refused(client: httpx.AsyncClient, token: str, code: str = "unauthorized") -> None:
    response = await me(client, token)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert response.headers["www-authenticate"] == "Bearer"


async def test_alg_none_is_refused(ext_client: httpx.AsyncClient, oidc: OidcProviders) -> None:
    header, payload, _ = _split(await oidc.token())
    await assert_refused(ext_client, _join({**header, "alg": "none"}, payload, ""))


@pytest.mark.parametrize("secret_form", ["pem", "jwk"])
async def test_hs256_signed_with_the_providers_public_key_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders, secret_form: str
) -> None:
    """Algorithm confusion: the public key (known to anyone) used as an HMAC secret."""
    header, payload, _ = _split(await oidc.token())
    if secret_form == "pem":
        secret = await _public_pem(oidc, header["kid"])
    else:
        jwk = next(k for k in await oidc.jwks("alpha") if k["kid"] == header["kid"])
        secret = json.dumps(jwk).encode()
    forged_header = {**header, "alg": "HS256"}
    signing_input = ".".join(_b64(json.dumps(p).encode()) for p in (forged_header, payload))
    signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    await assert_refused(ext_client, f"{signing_input}.{signature}")


async def test_a_token_for_another_audience_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    await assert_refused(ext_client, await oidc.token(audience="https://other-api.example"))


async def test_a_token_of_an_unconfigured_issuer_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    await assert_refused(ext_client, await oidc.token("rogue"))


async def test_a_token_claiming_a_configured_issuer_signed_by_another_provider_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    """`beta` signs (its own `kid`) a token saying `iss: alpha`: alpha's JWKS decides."""
    forged = await oidc.token("beta", iss=oidc.issuers["alpha"])
    assert _split(forged)[1]["iss"] == oidc.issuers["alpha"]
    await assert_refused(ext_client, forged)


async def test_an_expired_token_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    token = await oidc.token(iat_offset=-7200, exp_offset=-3600)
    await assert_refused(ext_client, token, "token_expired")


async def test_a_token_expired_within_the_leeway_still_works(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    token = await oidc.token(iat_offset=-600, exp_offset=-5)
    assert (await me(ext_client, token)).status_code == 200


@pytest.mark.parametrize("claims", [{"nbf_offset": 3600}, {"iat_offset": 3600}])
async def test_a_token_not_yet_valid_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders, claims: dict[str, int]
) -> None:
    await assert_refused(ext_client, await oidc.token(**claims))


async def test_a_tampered_payload_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    victim = unique_email("victim")
    genuine = await oidc.token(email=unique_email("attacker"), email_verified=True)
    assert (await me(ext_client, genuine)).status_code == 200
    header, payload, signature = _split(genuine)
    tampered = _join(header, {**payload, "sub": "user_admin", "email": victim}, signature)
    await assert_refused(ext_client, tampered)


async def test_a_token_without_kid_is_refused(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    header, payload, signature = _split(await oidc.token())
    del header["kid"]
    await assert_refused(ext_client, _join(header, payload, signature))


# --- linking to local accounts -------------------------------------------------------------


async def test_an_unverified_email_of_a_local_account_is_a_conflict(
    ext_app: FastAPI, ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    local = await register(ext_client)
    token = await oidc.token(email=local.email, email_verified=False)
    response = await me(ext_client, token)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "conflict"
    # Nothing was linked: the local account still signs in alone, the token is still refused.
    assert (await me(ext_client, token)).status_code == 409
    assert (await me(ext_client, local.access_token)).json()["data"]["id"] == local.id


async def test_a_verified_email_links_the_local_account(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    local = await register(ext_client)
    token = await oidc.token(email=local.email.upper(), email_verified=True)
    response = await me(ext_client, token)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] == local.id
    assert response.json()["data"]["emailVerified"] is True
    # One user, a local password and two providers.
    beta = await oidc.token("beta", email=local.email, email_verified=True)
    assert (await me(ext_client, beta)).json()["data"]["id"] == local.id
    assert (await me(ext_client, local.access_token)).status_code == 200


async def test_without_an_email_claim_the_user_gets_a_placeholder_address(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    response = await me(ext_client, await oidc.token(sub="user_no_email_" + unique_email()))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["email"].endswith("@identity.invalid")
    assert response.json()["data"]["emailVerified"] is False


async def test_a_deactivated_or_deleted_user_is_refused_whatever_the_token_says(
    ext_app: FastAPI, ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    for make_unusable in (deactivate, soft_delete):
        sub = f"user_{uuid.uuid4().hex}"
        token = await oidc.token(sub=sub, email=unique_email("ext"), email_verified=True)
        response = await me(ext_client, token)
        assert response.status_code == 200
        account = Account("", "", response.json()["data"], token, "")
        await make_unusable(ext_app, ext_client, account)
        await assert_refused(ext_client, token)
        fresh = await oidc.token(sub=sub, email=unique_email("ext"), email_verified=True)
        await assert_refused(ext_client, fresh)


async def test_claim_names_may_be_urls_or_dotted_paths(build_app: Any, oidc: OidcProviders) -> None:
    """Auth0's namespaced claims and Supabase's `user_metadata.email_verified`."""
    app: FastAPI = await build_app(
        rate_limit_enabled=False,
        auth_providers=[
            {
                "name": "supabase-like",
                "issuer": oidc.issuers["alpha"],
                "audience": "authenticated",
                "emailClaim": "https://tenantry.example/email",
                "emailVerifiedClaim": "user_metadata.email_verified",
                "firstNameClaim": "user_metadata.first_name",
                "lastNameClaim": None,
            }
        ],
    )
    email = unique_email("nested")
    token = await oidc.token(
        aud="authenticated",  # Supabase's audience (the provider sets it as the claim)
        **{
            "https://tenantry.example/email": email,
            "user_metadata": {"email_verified": True, "first_name": "Nested"},
            "family_name": "Ignored",
        },
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await me(client, token)
    assert response.status_code == 200, response.text
    user = response.json()["data"]
    assert (user["email"], user["emailVerified"]) == (email, True)
    assert (user["firstName"], user["lastName"]) == ("Nested", None)
