"""The servers tenant databases are placed on, and what is done to a database there.

A PostgreSQL server is a URL (its path names the maintenance database the `CREATE
DATABASE` runs in, `postgres` by default); each tenant database is `tenant_<org hex>` on
it. A SQLite "server" is a directory; each tenant database is the file `tenant_<hex>.db`.

A new tenant database is a copy of the server's template, `tenant_tpl<head revision>`: a
database migrated once to the head (foreign keys to control tables detached), copied in a
few milliseconds where migrating an empty database runs the whole revision chain. A
template that exists is complete: it is built as `tenant_tplbuild<unix time>x<hex>` and
published by renaming it; a build killed midway leaves only such a name, which a later
build or `tenantry tenants provision` drops. Whatever goes wrong with the template, the
caller creates and migrates the database as before (`TenantServer.clone_template`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import threading
import time
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
# Template databases: names no tenant database has (`tenant_<hex>`: "tpl" is not hex).
TEMPLATE_PREFIX = f"{DATABASE_PREFIX}tpl"
BUILDING_PREFIX = f"{TEMPLATE_PREFIX}build"  # a template being built (or a crashed build)
# A building template older than this is a crashed build (a build takes about a second).
STALE_BUILD_SECONDS = 300.0
# No retry loops around CREATE DATABASE ... TEMPLATE or ALTER DATABASE ... RENAME: when
# another session is connected to the database, PostgreSQL itself waits up to 5 s for it
# to end before refusing (a build's last session ending is covered by that wait).

log = logging.getLogger("tenantry.tenants")


def database_name(organization_id: uuid.UUID) -> str:
    return f"{DATABASE_PREFIX}{organization_id.hex}"


def template_name(revision: str | None) -> str | None:
    """The template database of `revision` (None: no usable revision, no template)."""
    if not revision or not revision.isalnum():
        return None
    name = f"{TEMPLATE_PREFIX}{revision}"
    return name if len(name) <= 63 and not name.startswith(BUILDING_PREFIX) else None


def is_template(database: str) -> bool:
    """A template or a template being built: never a tenant's database."""
    return database.startswith(TEMPLATE_PREFIX)


def _building_name() -> str:
    return f"{BUILDING_PREFIX}{int(time.time())}x{uuid.uuid4().hex[:10]}"


def _stale_build(database: str, now: float) -> bool:
    started = database.removeprefix(BUILDING_PREFIX).split("x", 1)[0]
    return not started.isdigit() or now - int(started) > STALE_BUILD_SECONDS


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
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for partial in path.parent.glob(f".{path.name}.*.cloning"):  # a killed copy
                    partial.unlink(missing_ok=True)
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

    # --- templates ------------------------------------------------------------------------

    async def template_databases(self) -> list[str]:
        """The templates on this server, built or being built (never tenants' databases)."""
        if self.is_sqlite:
            return await asyncio.to_thread(self._template_files)
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            rows = await connection.fetch(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                TEMPLATE_PREFIX,
            )
        finally:
            await connection.close()
        return sorted(row["datname"] for row in rows)

    def _template_files(self) -> list[str]:
        directory = Path(self.setting)
        if not directory.is_dir():
            return []
        return sorted(
            path.name.removesuffix(SQLITE_SUFFIX)
            for path in directory.glob(f"{TEMPLATE_PREFIX}*{SQLITE_SUFFIX}")
        )

    async def tidy_templates(self, keep: str | None) -> list[str]:
        """Drop the templates of other revisions than `keep`'s and the crashed builds
        (building ones older than STALE_BUILD_SECONDS); what was dropped."""
        now = time.time()
        dropped = []
        for database in await self.template_databases():
            if database.startswith(BUILDING_PREFIX):
                if not _stale_build(database, now):
                    continue  # another process may be building it right now
            elif database == keep:
                continue
            await self.drop_database(database)
            dropped.append(database)
        return dropped

    async def ensure_template(self, revision: str) -> str | None:
        """The name of this server's template at `revision`, built if missing (None: no
        template for such a revision). The build happens under a temporary name, is checked
        to be at `revision`, then published by a rename: a template that exists is whole.
        If another process published first, this one's copy is dropped and theirs used.
        """
        name = template_name(revision)
        if name is None:
            return None
        if await self.database_exists(name):
            return name
        building = _building_name()
        try:
            await self.create_database(building)
            built = await self.migrate(building)
            if built != revision:
                raise RuntimeError(f"the template was built at {built}, not {revision}")
            if self.is_sqlite:
                await asyncio.to_thread(self._publish_sqlite_template, building, name)
            else:
                await self._rename(building, name)
        finally:
            await self.drop_database(building)  # gone once published; a failed build's
        log.info("built the template %s on %s", name, self.name)
        await self.tidy_templates(keep=name)
        return name

    def _publish_sqlite_template(self, building: str, name: str) -> None:
        path = self.path_of(building)
        with contextlib.closing(sqlite3.connect(path)) as connection:
            # One self-contained file (no WAL beside it): the copies are of that file.
            connection.execute("PRAGMA journal_mode=DELETE")
        with contextlib.suppress(FileExistsError):  # another process published first
            os.link(path, self.path_of(name))

    async def _rename(self, building: str, name: str) -> None:
        _check_name(building)
        _check_name(name)
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            await connection.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return  # another process published first: the caller drops this copy
        finally:
            await connection.close()

    async def clone_template(self, database: str, revision: str | None) -> str | None:
        """Make `database` (which must not exist) a copy of the template at `revision`,
        building the template first if needed; the new database's revision, or None if
        the template could not be used (logged; nothing is left of the attempt then), for
        the caller to create and migrate the database instead.

        Raises only if a copy that turned out wrong could not be dropped.
        """
        _check_name(database)
        made = False
        try:
            name = await self.ensure_template(revision) if revision else None
            if name is None:
                return None
            if self.is_sqlite:
                made = await asyncio.to_thread(self._copy_sqlite, name, database)
            else:
                made = await self._copy_postgresql(name, database)
            if not made:
                return None
            cloned = await schema_revision(self.database_url(database))
            if cloned != revision:
                raise _WrongTemplate(name, f"the copy is at {cloned}, not {revision}")
            return cloned
        except _WrongTemplate as error:
            log.error("%s: dropping the template %s; migrating instead", error, error.template)
            await self.drop_database(database)
            await self.drop_database(error.template)  # the next provisioning rebuilds it
            return None
        except Exception:
            log.warning(
                "copying the template for %s on %s failed; migrating instead",
                database,
                self.name,
                exc_info=True,
            )
            if made:
                await self.drop_database(database)
            return None

    def _copy_sqlite(self, template: str, database: str) -> bool:
        # The template file is never written once published: a plain copy is consistent.
        # Copied to a hidden partial name, then published by a link (like a restore).
        target = self.path_of(database)
        for killed in target.parent.glob(f".{target.name}.*.cloning"):  # a copy killed midway
            killed.unlink(missing_ok=True)
        partial = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.cloning"
        try:
            shutil.copyfile(self.path_of(template), partial)
            os.link(partial, target)  # FileExistsError: the database exists, not ours
        finally:
            partial.unlink(missing_ok=True)
        return True

    async def _copy_postgresql(self, template: str, database: str) -> bool:
        _check_name(template)
        connection = await asyncpg.connect(self._admin_dsn())
        try:
            # A session connected to the template (someone inspecting it) would make
            # PostgreSQL wait 5 s and refuse, with a request waiting on it: migrate at once
            # instead. One connecting between this check and the copy costs that wait once.
            connected = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", template
            )
            if connected:
                log.warning(
                    "%d session(s) connected to the template %s; migrating %s instead",
                    connected,
                    template,
                    database,
                )
                return False
            await connection.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
            return True
        finally:
            await connection.close()


class _WrongTemplate(RuntimeError):
    """A copy of `template` is not at the template's revision: the template is wrong."""

    def __init__(self, template: str, message: str) -> None:
        super().__init__(message)
        self.template = template


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
