"""The servers tenant databases are placed on, and what is done to a database there.

A PostgreSQL server is a URL (its path names the maintenance database the `CREATE
DATABASE` runs in, `postgres` by default); each tenant database is `tenant_<org hex>` on
it. A SQLite "server" is a directory; each tenant database is the file `tenant_<hex>.db`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tenantry.core.migrate import upgrade_to_head
from tenantry.core.tenantdb import control_only_tables, tenant_database_tables

DATABASE_PREFIX = "tenant_"
SQLITE_SUFFIX = ".db"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def database_name(organization_id: uuid.UUID) -> str:
    return f"{DATABASE_PREFIX}{organization_id.hex}"


@dataclass(frozen=True, slots=True)
class TenantServer:
    """One entry of TENANT_DATABASE_SERVERS."""

    name: str  # as the registry stores it: the URL with its password hidden, or the directory
    setting: str  # the configured value (credentials included)

    @classmethod
    def from_setting(cls, value: str) -> TenantServer:
        if value.startswith("postgresql"):
            url = make_url(value)
            if not url.database:
                url = url.set(database="postgres")
            return cls(name=url.render_as_string(hide_password=True), setting=str(url))
        directory = value.removeprefix("sqlite+aiosqlite:///")
        return cls(name=str(Path(directory).resolve()), setting=str(Path(directory).resolve()))

    @property
    def is_sqlite(self) -> bool:
        return not self.setting.startswith("postgresql")

    def database_url(self, database: str) -> str:
        if self.is_sqlite:
            return f"sqlite+aiosqlite:///{self.path_of(database)}"
        url = make_url(self.setting).set(database=database)
        return url.render_as_string(hide_password=False)

    def path_of(self, database: str) -> Path:
        return Path(self.setting) / f"{database}{SQLITE_SUFFIX}"

    def _touch(self, database: str) -> None:
        Path(self.setting).mkdir(parents=True, exist_ok=True)
        self.path_of(database).touch()

    def _admin_dsn(self) -> str:
        url = make_url(self.setting).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    async def create_database(self, database: str) -> None:
        """Create the (empty) database; nothing if it exists (a repaired half-made one)."""
        _check_name(database)
        if self.is_sqlite:
            await asyncio.to_thread(self._touch, database)
            return
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            found = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", database
            )
            if not found:
                await connection.execute(f'CREATE DATABASE "{database}"')
        finally:
            await connection.close()

    async def drop_database(self, database: str) -> None:
        """Drop it (connections to it are ended); nothing if it does not exist."""
        _check_name(database)
        if self.is_sqlite:
            path = self.path_of(database)
            for file in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    file.unlink()
            return
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await connection.close()

    async def database_exists(self, database: str) -> bool:
        if self.is_sqlite:
            return self.path_of(database).exists()
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            found = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", database
            )
        finally:
            await connection.close()
        return bool(found)

    async def sizes(self, databases: list[str]) -> dict[str, int]:
        """Bytes on disk of each database (files with their WAL on SQLite)."""
        if not databases:
            return {}
        if self.is_sqlite:
            return {name: _file_bytes(self.path_of(name)) for name in databases}
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            rows = await connection.fetch(
                "SELECT datname, pg_database_size(datname) AS bytes FROM pg_database "
                "WHERE datname = ANY($1::text[])",
                databases,
            )
        finally:
            await connection.close()
        return {row["datname"]: int(row["bytes"]) for row in rows}

    async def migrate(self, database: str, executor: Executor | None = None) -> str | None:
        """Upgrade the database to the head of the one revision chain, then detach the
        foreign keys to control tables; its revision afterwards.

        Alembic keeps its migration context in process-wide globals: in a thread of this
        process one upgrade runs at a time; `executor` (a process pool, `migrate --all
        --concurrency N`) runs several at once, one per process.
        """
        url = self.database_url(database)
        if executor is None:
            await asyncio.to_thread(upgrade_serially, url)
        else:
            await asyncio.get_running_loop().run_in_executor(executor, upgrade_to_head, url)
        await detach_control_foreign_keys(url)
        return await schema_revision(url)


_ALEMBIC = threading.Lock()


def upgrade_serially(url: str) -> None:
    with _ALEMBIC:
        upgrade_to_head(url)


def _file_bytes(path: Path) -> int:
    files = (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS))
    return sum(file.stat().st_size for file in files if file.exists())


def _check_name(database: str) -> None:
    # Names are made by `database_name`; refuse anything else before it reaches SQL.
    body = database.removeprefix(DATABASE_PREFIX)
    if not database.startswith(DATABASE_PREFIX) or not body.isalnum() or len(database) > 63:
        raise ValueError(f"not a tenant database name: {database!r}")


async def schema_revision(url: str) -> str | None:
    """The Alembic revision a database is at (None: not migrated)."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


async def stored_object_keys(url: str) -> list[str]:
    """The storage keys every `files` row of a tenant database names (deleted rows too)."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return list(await connection.scalars(text("SELECT storage_key FROM files")))
    finally:
        await engine.dispose()


async def detach_control_foreign_keys(url: str) -> list[str]:
    """Drop, in a tenant database, the foreign keys that point to control tables.

    Those rows (organizations, users, ...) are in the control database, so such a key can
    never hold here; the services check them instead (an assignee must be a member, ...).
    Keys between tenant tables (a task's project) stay. Run after every upgrade of a
    tenant database: a later revision adding such a key is detached the same way.
    """
    engine = create_async_engine(url, poolclass=NullPool)  # SQLite: foreign_keys off
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_detach)
    finally:
        await engine.dispose()


def _detach(connection: Connection) -> list[str]:
    control = control_only_tables()
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    operations = Operations(MigrationContext.configure(connection))
    dropped: list[str] = []
    for table in sorted(tenant_database_tables() & present):
        keys: list[Any] = [
            key
            for key in inspector.get_foreign_keys(table)
            if key["referred_table"] in control and key.get("name")
        ]
        if not keys:
            continue
        if connection.dialect.name == "sqlite":
            with operations.batch_alter_table(table, recreate="always") as batch:
                for key in keys:
                    batch.drop_constraint(key["name"], type_="foreignkey")
        else:
            for key in keys:
                operations.drop_constraint(key["name"], table, type_="foreignkey")
        dropped.extend(f"{table}.{key['name']}" for key in keys)
    if connection.dialect.name == "sqlite":
        connection.execute(text("PRAGMA foreign_key_check"))
    return dropped
