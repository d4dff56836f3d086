"""External issuers' tokens (API.md, "External identity providers"), from a real provider."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import unique_email
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
