"""The database is the authority on access-token revocation (issue 12, item 3).

A revoked token stays 401 on tenant routes whatever happened to the cache: cleared keys,
an evicting flood, a Redis restart. The cache only remembers what the database said.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tenantry.core.cache import DEFAULT_MAX_ENTRIES, MemoryCache
from tests.conftest import client_for
from tests.factories import Account, create_org, deactivate, login, register
from tests.tasks.test_task_lists import count_statements

Revoke = Callable[[FastAPI, httpx.AsyncClient, Account], Awaitable[None]]


async def _logout(_app: FastAPI, client: httpx.AsyncClient, account: Account) -> None:
    response = await client.post(
        "/api/v1/auth/logout", json={"refreshToken": account.refresh_token}
    )
    assert response.status_code == 204


async def _logout_all(_app: FastAPI, client: httpx.AsyncClient, account: Account) -> None:
    response = await client.post("/api/v1/auth/logout-all", headers=account.headers)
    assert response.status_code == 204


async def _password_changed_elsewhere(
    _app: FastAPI, client: httpx.AsyncClient, account: Account
) -> None:
    other = await login(client, account.email, account.password)
    response = await client.post(
        "/api/v1/auth/password/change",
        json={"currentPassword": account.password, "newPassword": "another-long-password-1"},
        headers=other.headers,
    )
    assert response.status_code == 204, response.text


async def _deactivated(app: FastAPI, client: httpx.AsyncClient, account: Account) -> None:
    await deactivate(app, client, account)


REVOCATIONS: dict[str, Revoke] = {
    "logout": _logout,
    "logout-all": _logout_all,
    "password-change": _password_changed_elsewhere,
    "deactivation": _deactivated,
}


async def _revoked_member(
    app: FastAPI, client: httpx.AsyncClient, revoke: Revoke
) -> tuple[Account, str]:
    """A user whose token was accepted on a tenant route (facts warm), then revoked."""
    account = await register(client)
    org = await create_org(client, account)
    url = f"{org.path}/projects"
    assert (await client.get(url, headers=account.headers)).status_code == 200
    await revoke(app, client, account)
    assert (await client.get(url, headers=account.headers)).status_code == 401
    return account, url


async def _forget_auth_facts(app: FastAPI) -> None:
    """Cache loss: every revocation and session fact this app remembered is gone."""
    if isinstance(app.state.cache, MemoryCache):
        await app.state.cache.close()  # clears the whole in-process cache
    else:
        await app.state.cache.delete_prefix("auth:")


@pytest.mark.parametrize("how", list(REVOCATIONS))
async def test_a_revoked_token_stays_401_on_a_tenant_route_after_the_cache_is_lost(
    app: FastAPI, client: httpx.AsyncClient, how: str
) -> None:
    account, url = await _revoked_member(app, client, REVOCATIONS[how])
    await _forget_auth_facts(app)
    assert (await client.get(url, headers=account.headers)).status_code == 401
    # ... and again once the database's answer is cached.
    assert (await client.get(url, headers=account.headers)).status_code == 401


async def test_a_live_token_keeps_working_after_the_cache_is_lost(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await register(client)
    org = await create_org(client, account)
    await _forget_auth_facts(app)
    assert (await client.get(f"{org.path}/projects", headers=account.headers)).status_code == 200


async def test_a_warm_tenant_request_asks_the_database_nothing_about_the_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The hot path stays one cache round trip; a lost fact costs exactly one query."""
    account = await register(client)
    org = await create_org(client, account)
    url, params = f"{org.path}/projects", {"cursor": ""}
    assert (await client.get(url, params=params, headers=account.headers)).status_code == 200
    with count_statements(app.state.database.engine) as warm:
        assert (await client.get(url, params=params, headers=account.headers)).status_code == 200
    assert [sql for sql in warm if "auth_sessions" in sql] == []
    await _forget_auth_facts(app)
    with count_statements(app.state.database.engine) as cold:
        assert (await client.get(url, params=params, headers=account.headers)).status_code == 200
    assert len([sql for sql in cold if "auth_sessions" in sql]) == 1


async def test_a_revoked_token_stays_401_after_an_evicting_flood(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account, url = await _revoked_member(app, client, _logout)
    cache = app.state.cache
    if not isinstance(cache, MemoryCache):
        pytest.skip("Redis here evicts nothing (no maxmemory); key loss is tested above")
    for i in range(DEFAULT_MAX_ENTRIES + 200):
        await cache.set(f"flood:{i}", b"x")
    assert (await client.get(url, headers=account.headers)).status_code == 401


async def test_list_totals_live_outside_the_cache_of_security_facts(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Distinct searches fill their own bounded cache, so they evict no session fact."""
    account = await register(client)
    org = await create_org(client, account)
    for i in range(5):
        response = await client.get(
            f"{org.path}/projects", params={"search": f"s{i}"}, headers=account.headers
        )
        assert response.status_code == 200
        assert response.json()["meta"]["total"] == 0
    assert await app.state.cache.delete_prefix("count") == 0


# --- a real Redis restart ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnRedis:
    """A redis-server of this test only (temp dir, free port, no persistence)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory() as directory:
        server = OwnRedis(Path(directory))
        await server.start()
        try:
            yield server
        finally:
            server.stop()


async def _until_answered(client: httpx.AsyncClient, url: str, token: str) -> int:
    """The first status that is not a 503 (the client reconnecting to the new server)."""
    for _ in range(50):
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 503:
            return response.status_code
        await asyncio.sleep(0.1)
    return 503


@pytest.mark.services
async def test_a_revoked_token_stays_401_after_a_redis_restart(
    build_app: Callable[..., Awaitable[FastAPI]], own_redis: OwnRedis
) -> None:
    app = await build_app(
        redis_url=own_redis.url, redis_key_prefix=f"restart-{uuid.uuid4().hex[:8]}:"
    )
    async with client_for(app) as client:
        account, url = await _revoked_member(app, client, _logout)
        live = await register(client)
        live_org = await create_org(client, live)
        own_redis.stop()
        await own_redis.start()
        assert await _until_answered(client, url, account.access_token) == 401
        live_url = f"{live_org.path}/projects"
        assert await _until_answered(client, live_url, live.access_token) == 200
