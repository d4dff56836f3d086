"""The revision chain: applies, reverts and re-applies, and matches the models exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tenantry.config import load_settings
from tenantry.core.db import Base, Database
from tenantry.core.indexes import exists_on
from tenantry.core.migrate import alembic_config, upgrade_to_head
from tenantry.models import import_all_models
from tests.conftest import (
    MARIADB_DATABASE_OPTIONS,
    TEST_DATABASE_URL,
    USES_MARIADB,
    USES_SERVICES,
    _mariadb_admin,
    _postgres_admin_dsn,
)


@pytest.fixture
async def scratch_database_url(tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the backend under test, dropped afterwards."""
    if USES_MARIADB:
        name = f"tenantry_scratch_{uuid.uuid4().hex[:10]}"
        await _mariadb_admin(f"CREATE DATABASE `{name}` {MARIADB_DATABASE_OPTIONS}")
        yield TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
        await _mariadb_admin(f"DROP DATABASE IF EXISTS `{name}`")
        return
    if not USES_SERVICES:
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
        return
    import asyncpg

    name = f"tenantry_scratch_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(_postgres_admin_dsn(TEST_DATABASE_URL))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(_postgres_admin_dsn(TEST_DATABASE_URL))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def test_one_linear_revision_chain() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"


async def test_upgrade_downgrade_upgrade(scratch_database_url: str) -> None:
    config = alembic_config(scratch_database_url)
    await asyncio.to_thread(upgrade_to_head, scratch_database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(upgrade_to_head, scratch_database_url)


async def test_models_match_the_migrated_schema(scratch_database_url: str) -> None:
    import_all_models()
    await asyncio.to_thread(upgrade_to_head, scratch_database_url)
    database = Database(load_settings(_env_file=None, database_url=scratch_database_url))

    def diff(connection: Any) -> list[Any]:
        def include(item: Any, *_: Any) -> bool:  # this dialect's form of a list index
            return exists_on(item, connection.dialect.name)

        opts = {"compare_type": True, "include_object": include}
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, Base.metadata))

    try:
        async with database.engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await database.dispose()
    assert differences == []
