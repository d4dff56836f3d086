"""Database per tenant, on real databases: SQLite files under a temporary directory
(`make test`), or databases on the PostgreSQL server (`make test-services`).

Two PostgreSQL "servers" here are two URLs to the same cluster, told apart by their
maintenance database (each test creates its own, so placement counts are its own); a
second real cluster is tests/support/pgcluster.py's (feat/tenantops).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenantry.config import Settings
from tenantry.core.migrate import upgrade_to_head
from tests.conftest import TEST_DATABASE_URL, USES_REDIS, USES_SERVICES

if not USES_SERVICES and USES_REDIS:  # MariaDB: database per tenant needs PostgreSQL or SQLite
    pytest.skip("database per tenant runs on SQLite and PostgreSQL", allow_module_level=True)

SERVER_ROOT = TEST_DATABASE_URL.rsplit("/", 1)[0]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass
class Servers:
    """Tenant database servers made for one test."""

    tmp_path: Path
    made: list[str]

    async def new(self) -> str:
        """A fresh, empty server: a directory, or a maintenance database on the cluster."""
        if not USES_SERVICES:
            directory = self.tmp_path / f"server-{len(self.made)}"
            self.made.append(str(directory))
            return str(directory)
        name = f"tenantry_srv_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(_dsn(TEST_DATABASE_URL))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.made.append(name)
        return f"{SERVER_ROOT}/{name}"


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    made = Servers(tmp_path, [])
    yield made
    if USES_SERVICES:
        admin = await asyncpg.connect(_dsn(TEST_DATABASE_URL))
        try:
            for name in made.made:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class ControlDatabase:
    url: str
    tenants: list[str]  # server settings


@pytest.fixture
async def control(tmp_path: Path, servers: Servers) -> AsyncIterator[ControlDatabase]:
    """A control database of its own (migrated), so `--all` and placement see only this
    test's tenants; its tenant databases are dropped afterwards."""
    if not USES_SERVICES:
        url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
        await asyncio.to_thread(upgrade_to_head, url)
        yield ControlDatabase(url, [await servers.new()])
        return
    name = f"tenantry_ctl_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_dsn(TEST_DATABASE_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"{SERVER_ROOT}/{name}"
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        yield ControlDatabase(url, [await servers.new()])
    finally:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                tenants = list(
                    await connection.scalars(text("SELECT database FROM tenant_databases"))
                )
        finally:
            await engine.dispose()
        admin = await asyncpg.connect(_dsn(TEST_DATABASE_URL))
        try:
            for tenant in [*tenants, name]:
                await admin.execute(f'DROP DATABASE IF EXISTS "{tenant}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def control_settings(
    control: ControlDatabase, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": control.url,
            "tenancy_mode": "database",
            "tenant_database_servers": control.tenants,
            "rate_limit_enabled": False,
        }
        values.update(overrides)
        return make_settings(**values)

    return factory


@pytest.fixture
async def tenant_app(
    build_app: Callable[..., Any], control_settings: Callable[..., Settings]
) -> FastAPI:
    """An app in database mode on the test's own control database and server."""
    settings = control_settings()
    app: FastAPI = await build_app(**_overrides(settings))
    return app


def _overrides(settings: Settings) -> dict[str, Any]:
    return {
        "database_url": settings.database_url,
        "tenancy_mode": "database",
        "tenant_database_servers": settings.tenant_database_servers,
        "rate_limit_enabled": False,
    }


def cli_environment(settings: Settings) -> dict[str, str]:
    """The environment a `tenantry` subprocess needs to act on `settings`' databases."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TENANT")}
    env.update(
        {
            "ENV": "test",
            "DATABASE_URL": settings.database_url,
            "TENANCY_MODE": "database",
            "TENANT_DATABASE_SERVERS": ",".join(settings.tenant_database_servers),
            "SECRET_KEY": "test-secret-key-" + "x" * 32,
            "VAR_DIR": str(settings.var_dir),
            "LOG_LEVEL": "WARNING",
        }
    )
    return env
