"""Access tokens name their issuer and audience, and verification checks both (item 15)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tenantry.core.security import derive_key
from tests.conftest import client_for
from tests.factories import Account, register

ME = "/api/v1/users/me"


def _signed(app: FastAPI, claims: dict[str, object]) -> str:
    key = derive_key(app.state.settings.secret(), "tenantry/jwt-signing", 64)
    return jwt.encode(claims, key, algorithm="HS256")


def _claims(account: Account) -> dict[str, object]:
    return dict(jwt.decode(account.access_token, options={"verify_signature": False}))


async def _me(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def test_access_tokens_carry_the_configured_issuer_and_audience(account: Account) -> None:
    claims = _claims(account)
    assert claims["iss"] == "tenantry"
    assert claims["aud"] == "tenantry"


async def test_a_re_signed_token_with_its_own_claims_is_accepted(
    app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    """The control for the refusals below: only the claim under test differs."""
    assert await _me(client, _signed(app, _claims(account))) == 200


@pytest.mark.parametrize("missing", ["iss", "aud"])
async def test_a_token_without_issuer_or_audience_is_401(
    app: FastAPI, client: httpx.AsyncClient, account: Account, missing: str
) -> None:
    claims = {k: v for k, v in _claims(account).items() if k != missing}
    assert await _me(client, _signed(app, claims)) == 401


@pytest.mark.parametrize(
    "override",
    [{"iss": "someone-else"}, {"aud": "another-service"}, {"aud": ["another-service"]}],
)
async def test_a_token_with_another_issuer_or_audience_is_401(
    app: FastAPI, client: httpx.AsyncClient, account: Account, override: dict[str, object]
) -> None:
    assert await _me(client, _signed(app, _claims(account) | override)) == 401


async def test_a_deployment_with_another_audience_refuses_the_tokens_of_this_one(
    build_app: Callable[..., Awaitable[FastAPI]], client: httpx.AsyncClient
) -> None:
    # Same SECRET_KEY, same database: only JWT_AUDIENCE differs.
    account = await register(client)
    other = await build_app(jwt_audience="tenantry-staging")
    async with client_for(other) as other_client:
        assert await _me(other_client, account.access_token) == 401
        mine = await register(other_client)
        assert _claims(mine)["aud"] == "tenantry-staging"
        assert await _me(other_client, mine.access_token) == 200
