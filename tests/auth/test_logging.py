"""Security events are logged, and the log capture of this package can see them."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI

from tests.auth.conftest import find_leaks
from tests.factories import Account, age_refresh_rotation, remember_secret


async def test_refresh_token_reuse_is_logged_as_a_security_event_without_the_token(
    app: FastAPI,
    client: httpx.AsyncClient,
    account: Account,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await client.post("/api/v1/auth/refresh", json={"refreshToken": account.refresh_token})
    await age_refresh_rotation(app, account.refresh_token, 11)  # past the reuse grace
    with caplog.at_level(logging.INFO, logger="tenantry.security"):
        response = await client.post(
            "/api/v1/auth/refresh", json={"refreshToken": account.refresh_token}
        )
    assert response.status_code == 401
    events = [r.msg for r in caplog.records if r.name == "tenantry.security"]
    assert any(
        isinstance(e, dict) and e.get("security_event") == "security.refresh_token_reuse"
        for e in events
    )
    assert account.refresh_token not in caplog.text


def test_the_leak_finder_flags_secrets_jwts_and_hashes() -> None:
    remember_secret("a-secret-only-this-test-knows")
    assert find_leaks("user logged in") == []
    assert find_leaks("oops a-secret-only-this-test-knows")
    assert find_leaks("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijklmn")
    assert find_leaks("hash $argon2id$v=19$m=64")


def test_the_package_capture_sees_our_records_at_debug(no_secrets_in_logs) -> None:
    from tenantry.core.logging import get_logger

    marker = "capture-probe-" + "7f3a"
    get_logger("tenantry.security").debug(marker)
    assert any(marker in line for line in no_secrets_in_logs.lines)
