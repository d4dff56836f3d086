"""JWKS caching: rotation through the provider, the unknown-`kid` cooldown, an issuer outage.

These tests trust the `rogue` provider under the name `gamma` in apps of their own, and
rotate its keys: the shared app's providers (`alpha`, `beta`) are never rotated.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tenantry.config import Settings
from tenantry.core.errors import Unauthorized
from tenantry.modules.identity.service import ExternalAuth
from tests.identity.conftest import AUDIENCE, OidcProviders, bearer, external_of

TTL = 300


def gamma(oidc: OidcProviders) -> list[dict[str, Any]]:
    return [{"name": "gamma", "issuer": oidc.issuers["rogue"], "audience": AUDIENCE}]


async def gamma_app(build_app: Callable[..., Any], oidc: OidcProviders) -> FastAPI:
    app: FastAPI = await build_app(
        rate_limit_enabled=False, auth_providers=gamma(oidc), auth_jwks_ttl_seconds=TTL
    )
    return app


async def status_of(app: FastAPI, token: str) -> int:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return (await client.get("/api/v1/users/me", headers=bearer(token))).status_code


def with_kid(token: str, kid: str) -> str:
    """The token's claims and signature under another `kid`."""
    header = {**jwt.get_unverified_header(token), "kid": kid}
    raw = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([raw, *token.split(".")[1:]])


async def test_a_rotated_key_is_picked_up_without_restart_and_the_removed_one_refused(
    build_app: Callable[..., Any], oidc: OidcProviders
) -> None:
    app = await gamma_app(build_app, oidc)
    old = await oidc.token("rogue")
    assert await status_of(app, old) == 200
    await oidc.rotate("rogue")  # new keys; the old ones are no longer published
    new = await oidc.token("rogue")
    external_of(app).clock.advance(31)  # past the unknown-kid cooldown
    assert await status_of(app, new) == 200  # fetched again on its unknown kid
    assert await status_of(app, old) == 401  # the refetched JWKS no longer has it


async def test_a_removed_key_stops_working_once_the_cache_ttl_has_passed(
    build_app: Callable[..., Any], oidc: OidcProviders
) -> None:
    app = await gamma_app(build_app, oidc)
    old = await oidc.token("rogue")
    assert await status_of(app, old) == 200
    await oidc.rotate("rogue")
    assert await status_of(app, old) == 200  # cached: the issuer's change is not known yet
    external_of(app).clock.advance(TTL + 1)
    assert await status_of(app, old) == 401


async def test_unknown_kids_refetch_the_jwks_at_most_once_per_30_seconds(
    build_app: Callable[..., Any], oidc: OidcProviders
) -> None:
    app = await gamma_app(build_app, oidc)
    token = await oidc.token("rogue")
    assert await status_of(app, token) == 200
    keys = external_of(app).keys["gamma"]
    assert keys.fetches == 1
    for _ in range(5):
        assert await status_of(app, with_kid(token, f"made-up-{uuid.uuid4()}")) == 401
    assert keys.fetches == 1  # within 30 s of the last fetch: no request to the issuer
    external_of(app).clock.advance(30)
    for _ in range(5):
        assert await status_of(app, with_kid(token, f"made-up-{uuid.uuid4()}")) == 401
    assert keys.fetches == 2


class Switchable(httpx.AsyncBaseTransport):
    """The network to the issuer, which a test can cut."""

    def __init__(self) -> None:
        self.down = False
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("the issuer is unreachable", request=request)
        return await self._inner.handle_async_request(request)


async def test_cached_keys_keep_working_while_the_jwks_cannot_be_fetched(
    app: FastAPI, make_settings: Callable[..., Settings], oidc: OidcProviders
) -> None:
    network = Switchable()
    settings = make_settings(auth_providers=gamma(oidc), auth_jwks_ttl_seconds=TTL)
    external = ExternalAuth(settings, app.state.database, http=httpx.AsyncClient(transport=network))
    provider = external.providers[0]
    try:
        token = await oidc.token("rogue")
        user = (await external.authenticate(provider, token)).user_id
        network.down = True
        external.clock.advance(TTL + 1)  # the keys are due for a refetch, which fails
        assert (await external.authenticate(provider, token)).user_id == user
        await oidc.rotate("rogue", keep_old=True)
        unknown = await oidc.token("rogue")  # signed with a key the cache cannot have
        external.clock.advance(31)
        with pytest.raises(Unauthorized):
            await external.authenticate(provider, unknown)
        network.down = False
        external.clock.advance(31)
        assert (await external.authenticate(provider, unknown)).user_id != user
    finally:
        await external.close()
