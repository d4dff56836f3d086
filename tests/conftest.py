"""Fixtures: one migrated database per test session, an app, clients.

`TENANTRY_TEST_BACKEND=sqlite` (make test): a fresh SQLite file, in-process backends.
`TENANTRY_TEST_BACKEND=services` (make test-services): a PostgreSQL database created with
a unique name on `TEST_DATABASE_URL`'s server (dropped afterwards) and a Redis key prefix
unique to the run on `TEST_REDIS_URL`. Tests create their own rows with unique values and
never rely on another test's state, so no per-test cleanup is needed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tenantry.app import create_app
from tenantry.config import Settings, load_settings
from tenantry.core.migrate import upgrade_to_head

BACKEND = os.environ.get("TENANTRY_TEST_BACKEND", "sqlite")
USES_SERVICES = BACKEND == "services"
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if USES_SERVICES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL/Redis: run `make test-services`")
    for item in items:
        # Markers, not `item.keywords`: keywords also hold parent node names (a checkout
        # directory called `services` would skip everything).
        if item.get_closest_marker("services") or item.get_closest_marker("slow"):
            item.add_marker(skip)


def _postgres_admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if not USES_SERVICES:
        path = tmp_path_factory.mktemp("db") / "tenantry-test.db"
        url = f"sqlite+aiosqlite:///{path}"
        await asyncio.to_thread(upgrade_to_head, url)
        yield url
        return

    import asyncpg

    name = f"tenantry_test_{RUN_ID}"
    admin = await asyncpg.connect(_postgres_admin_dsn(TEST_DATABASE_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        yield url
    finally:
        admin = await asyncpg.connect(_postgres_admin_dsn(TEST_DATABASE_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str | None]:
    if not USES_SERVICES:
        yield None
        return
    yield TEST_REDIS_URL
    from redis.asyncio import Redis

    client = Redis.from_url(TEST_REDIS_URL)
    try:
        async for key in client.scan_iter(match=f"tenantry-test-{RUN_ID}:*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def make_settings(
    database_url: str, redis_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    var_dir = tmp_path_factory.mktemp("var")

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,
            "env": "test",
            "database_url": database_url,
            "redis_url": redis_url,
            "redis_key_prefix": f"tenantry-test-{RUN_ID}:",
            "secret_key": "test-secret-key-" + "x" * 32,
            "var_dir": Path(var_dir),
            "log_level": "WARNING",
            # Tests drive jobs deterministically (`Worker.drain`); opt in per test.
            "jobs_embedded_worker": False,
        }
        values.update(overrides)
        return load_settings(**values)

    return factory


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def client_for(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
async def build_app(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """Independent extra apps (other settings), started now and stopped after the test."""
    async with AsyncExitStack() as stack:

        async def factory(**overrides: Any) -> FastAPI:
            application = create_app(make_settings(**overrides))
            await stack.enter_async_context(application.router.lifespan_context(application))
            return application

        yield factory
