"""A real OpenID provider for the identity tests: `oidc-provider` on Node, on 127.0.0.1.

`tests/oidc_provider/server.mjs` runs three providers (`alpha`, `beta`, `rogue`), each its
own issuer on its own port; the app under test trusts `alpha` (Clerk-style webhooks, svix)
and `beta` (generic HMAC webhooks), never `rogue`. Tokens come from the provider's token
endpoint (`OidcProviders.token`); keys rotate through the provider (`rotate`).

Without `node`/`npm` these tests skip with the reason; with them and no `node_modules`,
the fixture runs `npm ci` (the committed package-lock.json) first, under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tenantry.app import create_app
from tenantry.config import Settings
from tenantry.services import services_of

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc_provider"
AUDIENCE = "https://api.tenantry.test"
SVIX_SECRET = "whsec_" + "dGVuYW50cnktdGVzdHMtc3ZpeC1zZWNyZXQtMzJieXRlcyE="
HMAC_SECRET = "tenantry-tests-hmac-secret"
START_TIMEOUT_SECONDS = 30
NPM_CI_TIMEOUT_SECONDS = 300


def _install_provider(npm: str) -> None:
    if (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    with open(PROVIDER_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two suites started at once install once
        if (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            return
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PROVIDER_DIR,
            check=True,
            timeout=NPM_CI_TIMEOUT_SECONDS,
        )


@dataclass
class OidcProviders:
    issuers: dict[str, str]

    async def token(
        self,
        provider: str = "alpha",
        *,
        sub: str | None = None,
        email: str | None = None,
        email_verified: bool | None = None,
        alg: str = "RS256",
        audience: str = AUDIENCE,
        **claims: Any,
    ) -> str:
        """A JWT access token from `provider`'s token endpoint, for the user described."""
        wanted: dict[str, Any] = {"sub": sub or f"user_{uuid.uuid4().hex[:16]}", **claims}
        if email is not None:
            wanted["email"] = email
        if email_verified is not None:
            wanted["email_verified"] = email_verified
        issuer = self.issuers[provider]
        async with httpx.AsyncClient(timeout=10) as http:
            registered = await http.post(
                f"{issuer}/reg",
                json={"redirect_uris": [], "tenantry_alg": alg, "tenantry_claims": wanted},
            )
            assert registered.status_code == 201, registered.text
            client = registered.json()
            issued = await http.post(
                f"{issuer}/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client["client_id"],
                    "client_secret": client["client_secret"],
                    "resource": audience,
                    "scope": "api",
                },
            )
            assert issued.status_code == 200, issued.text
            token: str = issued.json()["access_token"]
            return token

    async def jwks(self, provider: str = "alpha") -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as http:
            discovery = (
                await http.get(f"{self.issuers[provider]}/.well-known/openid-configuration")
            ).json()
            keys: list[dict[str, Any]] = (await http.get(discovery["jwks_uri"])).json()["keys"]
            return keys

    async def rotate(self, provider: str = "alpha", *, keep_old: bool = False) -> list[str]:
        """New signing keys at the provider (the old ones unpublished unless `keep_old`)."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{self.issuers[provider]}/__rotate", json={"keepOld": keep_old}
            )
            assert response.status_code == 200, response.text
            kids: list[str] = response.json()["kids"]
            return kids


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProviders]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":  # CI must run them (.ci/run checks for Node too)
            pytest.fail("Node.js and npm are required in CI for the identity tests")
        pytest.skip(
            "needs Node.js 20+ and npm: the identity tests run a real OpenID provider "
            "(oidc-provider, tests/oidc_provider)"
        )
    _install_provider(npm)
    stderr_path = tmp_path_factory.mktemp("oidc") / "provider.log"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [node, "server.mjs", "alpha", "beta", "rogue"],
            cwd=PROVIDER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_SECONDS)
        line = process.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the OpenID provider did not start: {stderr_path.read_text()}")
        yield OidcProviders(json.loads(line))
    finally:
        process.stdin.close()  # the server exits when its standard input closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def provider_settings(oidc: OidcProviders) -> list[dict[str, Any]]:
    return [
        {
            "name": "alpha",
            "issuer": oidc.issuers["alpha"],
            "audience": AUDIENCE,
            "webhookScheme": "svix",
            "webhookSecret": SVIX_SECRET,
        },
        {
            "name": "beta",
            "issuer": oidc.issuers["beta"],
            "audience": [AUDIENCE],
            "emailClaim": "email",
            "webhookScheme": "hmac",
            "webhookSecret": HMAC_SECRET,
        },
    ]


@pytest.fixture(scope="session")
async def ext_app(
    make_settings: Callable[..., Settings], oidc: OidcProviders
) -> AsyncIterator[FastAPI]:
    """An app trusting the `alpha` and `beta` providers (rate limits off, like `app`)."""
    application = create_app(
        make_settings(rate_limit_enabled=False, auth_providers=provider_settings(oidc))
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def ext_client(ext_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ext_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def external_of(app: FastAPI) -> Any:
    return services_of(app).external


__all__ = ["AUDIENCE", "HMAC_SECRET", "SVIX_SECRET", "OidcProviders", "bearer", "external_of"]
