"""`GET /auth/providers`, `AUTH_LOCAL=false` and the validation of `AUTH_PROVIDERS`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tenantry.config import Settings, SettingsError
from tests.factories import unique_email
from tests.identity.conftest import (
    AUDIENCE,
    HMAC_SECRET,
    SVIX_SECRET,
    OidcProviders,
    bearer,
    provider_settings,
)


async def test_the_providers_are_listed_with_public_fields_only(
    ext_client: httpx.AsyncClient, oidc: OidcProviders
) -> None:
    response = await ext_client.get("/api/v1/auth/providers")
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {"name": "alpha", "issuer": oidc.issuers["alpha"], "audience": [AUDIENCE], "jwksUrl": None},
        {"name": "beta", "issuer": oidc.issuers["beta"], "audience": [AUDIENCE], "jwksUrl": None},
    ]
    assert SVIX_SECRET not in response.text
    assert HMAC_SECRET not in response.text


async def test_without_local_auth_the_local_endpoints_answer_404_and_providers_still_work(
    build_app: Callable[..., Any], oidc: OidcProviders
) -> None:
    app: FastAPI = await build_app(
        rate_limit_enabled=False, auth_local=False, auth_providers=provider_settings(oidc)
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        credentials = {"email": unique_email(), "password": "correct horse battery"}
        token = await oidc.token(email=unique_email("ext"), email_verified=True)
        for method, path, body in [
            ("POST", "/api/v1/auth/register", credentials),
            ("POST", "/api/v1/auth/login", credentials),
            ("POST", "/api/v1/auth/password/forgot", {"email": credentials["email"]}),
            ("POST", "/api/v1/auth/password/reset", {"token": "x" * 43, "password": "p" * 12}),
            (
                "POST",
                "/api/v1/auth/password/change",
                {"currentPassword": "a" * 8, "newPassword": "b" * 8},
            ),
            ("POST", "/api/v1/auth/mfa/setup", None),
            ("POST", "/api/v1/auth/mfa/enable", {"code": "123456"}),
            ("POST", "/api/v1/auth/mfa/disable", {"password": "a" * 8, "code": "123456"}),
        ]:
            response = await client.request(method, path, json=body, headers=bearer(token))
            assert response.status_code == 404, (path, response.text)
            assert response.json()["code"] == "not_found"
        assert (await client.get("/api/v1/users/me", headers=bearer(token))).status_code == 200
        assert (await client.get("/api/v1/auth/providers")).status_code == 200


def test_auth_providers_are_read_from_the_environment_as_json(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AUTH_PROVIDERS",
        json.dumps(
            [
                {
                    "name": "clerk",
                    "issuer": "https://clerk.example.com",
                    "audience": "https://api.example.com",
                    "jwksUrl": "https://clerk.example.com/.well-known/jwks.json",
                }
            ]
        ),
    )
    settings = make_settings()
    (provider,) = settings.auth_providers
    assert (provider.name, provider.audience) == ("clerk", ["https://api.example.com"])
    assert provider.jwks_url == "https://clerk.example.com/.well-known/jwks.json"
    assert "HS256" not in provider.algorithms


@pytest.mark.parametrize(
    ("provider", "overrides", "named"),
    [
        ({"algorithms": ["RS256", "HS256"]}, {}, "algorithms"),
        ({"algorithms": ["none"]}, {}, "algorithms"),
        ({"audience": []}, {}, "audience"),
        ({"issuer": "ftp://issuer.example"}, {}, "issuer"),
        ({"name": "Not A Slug"}, {}, "name"),
        ({"webhookScheme": "svix"}, {}, "webhookScheme"),
        ({"surprise": 1}, {}, "surprise"),
        ({}, {"auth_clock_leeway_seconds": 61}, "AUTH_CLOCK_LEEWAY_SECONDS"),
    ],
)
def test_a_bad_provider_setting_is_refused_naming_it(
    make_settings: Callable[..., Settings],
    provider: dict[str, Any],
    overrides: dict[str, Any],
    named: str,
) -> None:
    base = {"name": "idp", "issuer": "https://idp.example", "audience": "api"}
    with pytest.raises(SettingsError, match=f"(?i){named}"):
        make_settings(auth_providers=[{**base, **provider}], **overrides)


def test_two_providers_cannot_share_a_name_or_an_issuer(
    make_settings: Callable[..., Settings],
) -> None:
    one = {"name": "idp", "issuer": "https://idp.example", "audience": "api"}
    with pytest.raises(SettingsError, match="its own name and issuer"):
        make_settings(auth_providers=[one, {**one, "name": "other"}])
    with pytest.raises(SettingsError, match="AUTH_LOCAL"):
        make_settings(auth_local=False)
