"""Fixtures: one migrated database per test session, an app, clients.

`TENANTRY_TEST_BACKEND=sqlite` (make test): a fresh SQLite file, in-process backends.
`TENANTRY_TEST_BACKEND=services` (make test-services): a PostgreSQL database created with
a unique name on `TEST_DATABASE_URL`'s server (dropped afterwards) and a Redis key prefix
unique to the run on `TEST_REDIS_URL`.
`TENANTRY_TEST_BACKEND=mariadb` (make test-mariadb): a MariaDB database created with a
unique name on `TEST_DATABASE_URL`'s server (mariadb+asyncmy://, dropped afterwards) and
Redis as for `services`. A test of a PostgreSQL-only defence (row-level security, the
`app.org_id` setting) is marked `postgresql_only("why")` and skipped there with that
reason; the guarantee it checks has a MariaDB counterpart test where MariaDB has one.
`TENANTRY_TEST_TENANCY=database` (make test-tenantdb) runs the chosen suites with
`TENANCY_MODE=database`: each organization the tests create gets a database of its own (a
file under a temporary directory, or `tenant_<hex>` on the PostgreSQL server, dropped at
the end of the run).
Tests create their own rows with unique values and never rely on another test's state,
so no per-test cleanup is needed.
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
from sqlalchemy.pool import NullPool

from tenantry.app import create_app
from tenantry.config import Settings, load_settings
from tenantry.core.migrate import upgrade_to_head
from tests.factories import Account, register

# `second_postgres`: a throwaway second PostgreSQL server (placement, move, restore tests).
pytest_plugins = ["tests.support.pgcluster"]

BACKEND = os.environ.get("TENANTRY_TEST_BACKEND", "sqlite")
USES_SERVICES = BACKEND == "services"
USES_MARIADB = BACKEND == "mariadb"
USES_REDIS = USES_SERVICES or USES_MARIADB
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]
TENANCY = os.environ.get("TENANTRY_TEST_TENANCY", "shared")
DATABASE_PER_TENANT = TENANCY == "database"
# Text columns default to utf8mb4, compared case-insensitively (emails, slugs).
MARIADB_DATABASE_OPTIONS = "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci"
NO_RLS = (
    "row-level security; MariaDB has none: structural scoping and the isolation walker "
    "(tests/orgs/test_isolation.py) are the guarantee there"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if USES_MARIADB:
        for item in items:
            marker = item.get_closest_marker("postgresql_only")
            if marker is not None:
                item.add_marker(pytest.mark.skip(reason=f"PostgreSQL only: {marker.args[0]}"))
    if USES_REDIS:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL/Redis: run `make test-services`")
    for item in items:
        # Markers, not `item.keywords`: keywords also hold parent node names (a checkout
        # directory called `services` would skip everything).
        if item.get_closest_marker("services") or item.get_closest_marker("slow"):
            item.add_marker(skip)


def _postgres_admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _mariadb_admin(statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(TEST_DATABASE_URL, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if USES_MARIADB:
        name = f"tenantry_test_{RUN_ID}"
        await _mariadb_admin(f"CREATE DATABASE `{name}` {MARIADB_DATABASE_OPTIONS}")
        url = TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
        try:
            await asyncio.to_thread(upgrade_to_head, url)
            yield url
        finally:
            await _mariadb_admin(f"DROP DATABASE IF EXISTS `{name}`")
        return
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
            for tenant in await _registered_tenant_databases(url):
                await admin.execute(f'DROP DATABASE IF EXISTS "{tenant}" WITH (FORCE)')
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session", autouse=True)
async def _tenant_templates_dropped() -> AsyncIterator[None]:
    """The tenant database templates the run built on the PostgreSQL cluster (one per
    revision, shared by the run's tests: servers.py) are dropped at its end; SQLite's are
    files under the tests' temporary directories."""
    yield
    if not USES_SERVICES:
        return
    import asyncpg

    from tenantry.modules.tenants.servers import TEMPLATE_PREFIX

    admin = await asyncpg.connect(_postgres_admin_dsn(TEST_DATABASE_URL))
    try:
        rows = await admin.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", TEMPLATE_PREFIX
        )
        for row in rows:
            await admin.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await admin.close()


async def _registered_tenant_databases(url: str) -> list[str]:
    """The tenant databases the run's control database knows of (to drop them)."""
    import asyncpg

    connection = await asyncpg.connect(_postgres_admin_dsn(url))
    try:
        rows = await connection.fetch("SELECT database FROM tenant_databases")
    finally:
        await connection.close()
    return [row["database"] for row in rows]


def tenant_servers(var_dir: Path) -> list[str]:
    """Where the run's tenant databases go in database mode."""
    if USES_SERVICES:
        return [TEST_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"]
    return [str(var_dir / "tenants")]


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str | None]:
    if not USES_REDIS:
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
            # Identity: cheap argon2id so the suite stays fast (production defaults are strong).
            "password_hash_time_cost": 1,
            "password_hash_memory_kib": 64,
            "password_hash_parallelism": 1,
            # Tests drive jobs deterministically (`Worker.drain`); opt in per test.
            "jobs_embedded_worker": False,
        }
        if DATABASE_PER_TENANT:
            values["tenancy_mode"] = "database"
            values["tenant_database_servers"] = tenant_servers(Path(var_dir))
            # The session's app keeps the engines of the organizations tests create: at the
            # defaults (5 x budget 100) it alone could hold the shared PostgreSQL's 100
            # connections. 10 engines of 3 per server; tests of the budget set their own.
            values["tenant_database_pool_size"] = 3
            values["tenant_database_connection_budget"] = 30
        values.update(overrides)
        return load_settings(**values)

    return factory


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # The shared app serves every test from one client IP: rate limits off here; tests of
    # rate limits build their own app (`build_app`, limits on by default).
    return make_settings(rate_limit_enabled=False)


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
async def account(client: httpx.AsyncClient) -> Account:
    """A freshly registered user (unique email) with its tokens and password."""
    return await register(client)


@pytest.fixture
async def auth_client(app: FastAPI, account: Account) -> AsyncIterator[httpx.AsyncClient]:
    """A client sending `account`'s access token."""
    async with client_for(app, headers=account.headers) as http:
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
