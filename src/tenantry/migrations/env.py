"""Alembic environment: async engine, one revision chain for SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from tenantry.config import load_settings
from tenantry.core.db import MARIADB_CHARSET, MARIADB_COLLATION, Base, Database
from tenantry.core.indexes import exists_on
from tenantry.models import import_all_models

import_all_models()
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    if connection.dialect.name == "mariadb":
        # Tables take the database's character set: utf8mb4 compared case-insensitively,
        # so a unique email or slug is unique whatever its case (docs/decisions.md, MariaDB).
        connection.exec_driver_sql(
            f"ALTER DATABASE CHARACTER SET {MARIADB_CHARSET} COLLATE {MARIADB_COLLATION}"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
        compare_type=True,
        # A list path's index has one form per dialect (core/indexes.py): compare only
        # this dialect's.
        include_object=lambda item, _name, _type, _reflected, _compare_to: exists_on(
            item, connection.dialect.name
        ),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    # Migrations run as the connecting (owner) role, never as DATABASE_APP_ROLE.
    database = Database(load_settings(database_url=url, database_app_role=None))
    try:
        async with database.engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await database.dispose()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = context.config.attributes.get("database_url") or load_settings().database_url
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `tenantry migrate`")
run()
