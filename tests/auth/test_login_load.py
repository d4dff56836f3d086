"""Logins under load: hashing bounded below the cores, a bounded queue, no hash for ghosts."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tenantry.config import Settings
from tenantry.core.security import ClientGone, PasswordHasher
from tests.conftest import client_for
from tests.factories import register, unique_email

LOGIN = "/api/v1/auth/login"


async def test_logins_beyond_the_hash_queue_get_503_with_retry_after(
    build_app: Callable[..., Any],
) -> None:
    # One hash at a time, one waiting: a burst of 12 logins cannot all be admitted.
    app = await build_app(
        rate_limit_enabled=False,
        password_hash_concurrency=1,
        password_hash_queue=1,
        password_hash_memory_kib=8 * 1024,
        password_hash_time_cost=2,
    )
    async with client_for(app) as client:
        account = await register(client)
        emails = [account.email] * 8 + [unique_email() for _ in range(4)]
        responses = await asyncio.gather(
            *(client.post(LOGIN, json={"email": e, "password": account.password}) for e in emails)
        )
        statuses = [r.status_code for r in responses]
        assert 200 in statuses
        refused = [r for r in responses if r.status_code == 503]
        assert refused, statuses
        for response in refused:
            assert response.headers["retry-after"] == "1"
            body = response.json()
            assert body["code"] == "service_unavailable"
            assert body["requestId"] == response.headers["x-request-id"]
        # Nothing was left behind: once the burst is over, a login goes through again.
        again = await client.post(
            LOGIN, json={"email": account.email, "password": account.password}
        )
        assert again.status_code == 200


def test_hash_concurrency_defaults_below_the_core_count(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    assert settings.password_hash_concurrency == max(1, (os.cpu_count() or 1) - 1)
    assert settings.password_hash_queue == 64


async def test_an_abandoned_login_is_not_hashed(make_settings: Callable[..., Settings]) -> None:
    hasher = PasswordHasher(make_settings())
    hashed = await hasher.hash("correct horse")
    calls = 0
    original = hasher._verify_and_update

    def counting(password: str, stored: str) -> tuple[bool, str | None]:
        nonlocal calls
        calls += 1
        return original(password, stored)

    hasher._verify_and_update = counting  # type: ignore[method-assign]

    async def gone() -> bool:
        return True

    async def here() -> bool:
        return False

    with pytest.raises(ClientGone):
        await hasher.verify("correct horse", hashed, abandoned=gone)
    assert calls == 0
    assert await hasher.verify("correct horse", hashed, abandoned=here) == (True, None)
    assert calls == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_hashing_threads_yield_to_the_event_loop(
    make_settings: Callable[..., Settings],
) -> None:
    hasher = PasswordHasher(make_settings())
    seen: list[int] = []

    def record(password: str) -> str:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return password

    hasher._hash.hash = record  # type: ignore[method-assign]
    await hasher.hash("x")
    assert seen[0] > os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
